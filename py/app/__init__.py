"""Glassbox's page: the only Python that touches the DOM (through ``js``/``pyscript``).

Layers, top to bottom:

    main.py        entry point run by index.html: wires the browser objects to the app
    dom.py         Page: the root element's data-state/data-backend, the status and error
                   panels (drawn by web/shell.js) and the view slots
    boot.py        Boot: the start-up sequence and page state; no ``js`` import, so CPython
                   tests drive it with a fake Page
    webgpu.py      probe_adapter(navigator): the WebGPU adapter's identity, or None
    console.py     run_code / to_json behind ``window.glassbox_py`` (also CPython-testable)
    loader.py      load_model(base_url, progress): fetch and verify a model folder
    explainer.py   Explainer: the session (model, runner, trace) and the action table; no ``js``
    controllers/   one small controller per view: its state and actions, no DOM, no selectors
    experiments_controller.py  the Experiments panel's state and actions (lens, ablation,
                   patching, attribution, exports); no ``js`` import
    factors.py     the factors panel's state and actions (issue 13); no ``js`` import
    runner.py      async run(ids) -> Trace: the numpy reference with the KV cache
    binding.py     Binding: the explainer's DOM side (slots, canvas pixels, KaTeX, events)
    views/         pure functions: data in, an HTML string (+ heat-map pixels) out

Page states (``<html data-state>``): loading -> ready, ready <-> busy, anything -> error.
"""
