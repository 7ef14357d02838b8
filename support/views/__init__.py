"""The pages: the customer chat (`chat.py`, mounted at /) and the staff pages (`staff.py`, mounted
at /staff/). Thin: parse, authorize, call a service or selector, render."""
