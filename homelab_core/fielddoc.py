"""What a field of a type the API shows means, and an example of it.

``name: Annotated[str, about("The metric's name.", "cpu.percent")]`` on an attrs class (or
a msgspec Struct) puts the description and the example into the class's JSON Schema, as
``msgspec.json.schema`` makes it, and so into the web API's OpenAPI document, without the
core knowing of the web layer. The annotation changes nothing else: attrs and the store
ignore it, and a value is never checked against the example.
"""

from __future__ import annotations

from typing import Any

import msgspec


def about(description: str, *examples: Any) -> msgspec.Meta:
    """The schema annotation of a field: its description and its examples (none for a
    field of another documented type, whose fields have theirs)."""
    return msgspec.Meta(description=description, examples=list(examples) if examples else None)
