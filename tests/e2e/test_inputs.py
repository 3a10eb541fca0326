"""The page's sampling inputs refuse or clamp what their labels would contradict (issue 9):
a visible message, the control and its label agree, and nothing samples with a refused value.
The rules themselves (controls.parse_sampling) are tested in CPython in tests/test_inputs.py."""

from __future__ import annotations


def state(app) -> dict:
    return app.py("{'k': explainer.sampling.top_k, 'dist_k': explainer.dist.top_k, 'runs': explainer.runs}")


def test_top_k_field_is_clamped_or_refused_visibly(app, artifacts):
    page = app.page
    field, label, message = (page.get_by_test_id("top-k"), page.locator("#top-k-out"),
                             page.get_by_test_id("sampling-message"))
    field.fill("12")
    assert state(app)["k"] == 12 and label.text_content() == "12" and message.is_hidden()
    runs = state(app)["runs"]

    for refused in ("2.5", ""):
        field.fill(refused)
        assert message.is_visible() and "whole number" in message.text_content()
        assert field.get_attribute("aria-invalid") == "true"
        got = state(app)
        assert got["k"] == 12 and got["dist_k"] == 12 and label.text_content() == "12"
    page.screenshot(path=str(artifacts / "inputs-refused-desktop.png"), clip=_sampling_box(page))

    for typed, kept, shown in (("-7", "0", "off"), ("99999999", "50257", "50257")):
        field.fill(typed)
        assert message.is_visible() and f"set to {kept}" in message.text_content()
        assert field.input_value() == kept and label.text_content() == shown
        assert state(app)["k"] == int(kept) and field.get_attribute("aria-invalid") == "false"

    page.set_viewport_size({"width": 360, "height": 740})
    try:
        field.fill("-1")
        assert message.is_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(artifacts / "inputs-clamped-phone.png"), clip=_sampling_box(page))
    finally:
        page.set_viewport_size({"width": 1280, "height": 720})
    field.fill("0")
    assert message.is_hidden() and state(app)["runs"] == runs  # re-sampling never ran the model


def _sampling_box(page) -> dict:
    page.locator("#view-sampling").scroll_into_view_if_needed()
    box = page.locator("#view-sampling").bounding_box()
    return {"x": box["x"], "y": box["y"], "width": box["width"], "height": box["height"]}
