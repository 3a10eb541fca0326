"""One small controller per view: its state and its actions, no DOM and no CSS selectors.

A controller gets the explainer (the session: model, runner, the current trace and the
next-token distribution, the layer every view follows) and the page object ``ui``. It names
page elements by the names in ``views/controls.py``'s ELEMENTS table, never by selector;
``binding.py`` turns names into DOM writes. Its ``actions`` table maps page actions
(``data-action`` values) to functions ``(controller, value, data)``; the explainer builds
one dispatch table from every controller's.

Adding a view: write ``views/<name>.py`` (trace in, View out); a controller here with
``name = slot = "<name>"``, a ``view()`` that calls it and its ``actions``; add the class to
``explainer.CONTROLLERS`` and ``("<name>", "Heading")`` to ``views/controls.SECTIONS`` (its
closed section on the page, which ``explainer.map.open_view("<name>")`` and *Every view*
open). A map part that should open it maps its ``data-part`` to the view in
``controllers/map.part_target``.
"""
