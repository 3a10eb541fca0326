"""Views: pure functions from data to one HTML string; dom.Page puts it on the page.

A view checks what it is given (ValueError on a wrong shape or kind), escapes every text it
shows, and never reaches into the model or the DOM.
"""
