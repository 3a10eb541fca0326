"""One small controller per view: its state and its actions, no DOM and no CSS selectors.

A controller gets the explainer (the session: model, runner, the current trace and the
next-token distribution, the layer every view follows) and the page object ``ui``. It names
page elements by the names in ``views/controls.py``'s ELEMENTS table, never by selector;
``binding.py`` turns names into DOM writes. Its ``actions`` table maps page actions
(``data-action`` values) to functions ``(controller, value, data)``; the explainer builds
one dispatch table from every controller's.

Adding a view: write ``views/<name>.py`` (trace in, View out), a controller here with
``slot = "<name>"`` and a ``view()`` that calls it, and add the controller class to
``explainer.CONTROLLERS``. The map part that opens it goes in ``views/overview.PARTS``.
"""
