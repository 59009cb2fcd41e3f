"""The texts a request carries to the provider, each where it can be read and replaced.

Secret scanning (aibridge.secrets, admission.secrets) reads every text of a request body and
may replace one: `WireApi.texts` yields one `TextSlot` per text, `slot.container[slot.key]`
being the string. Each API module knows its own fields (system prompts, messages, tool
results, tool-call arguments, Responses input items...); `strings` walks any JSON value and
is the default for an API that does not say.

`where` is said for people ("tool result of call toolu_1 in message 12") and only built when
a secret was found: the slot carries a template and its values, which cost nothing to make.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

Container = dict | list


class TextSlot(NamedTuple):
    container: Container
    key: str | int
    template: str  # e.g. "tool result of call {id} in message {index}"
    index: int = -1  # the message or input item
    id: str = ""  # the tool call
    signed: bool = False  # the provider signed it (thinking): changing it voids the request

    @property
    def text(self) -> str:
        return self.container[self.key]  # type: ignore[index]

    @property
    def where(self) -> str:
        # The id comes from the client: cut, so that a message naming it stays short.
        return self.template.format(index=self.index, id=self.id[:64] or "?")

    def replace(self, text: str) -> None:
        self.container[self.key] = text  # type: ignore[index]


def strings(value: object, template: str, index: int = -1, ident: str = "", *,
            depth: int = 0) -> Iterator[TextSlot]:
    """Every string in a JSON value (dict values and list items), depth first. Object keys are
    not texts a secret hides in, and are left alone."""
    if depth > 64:  # JSON this deep is no conversation; its strings are not worth a recursion
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                yield TextSlot(value, key, template, index, ident)
            elif isinstance(item, dict | list):
                yield from strings(item, template, index, ident, depth=depth + 1)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            if isinstance(item, str):
                yield TextSlot(value, position, template, index, ident)
            elif isinstance(item, dict | list):
                yield from strings(item, template, index, ident, depth=depth + 1)


def text_parts(container: Container, key: str | int, template: str, index: int = -1,
               ident: str = "", *, field: str = "text") -> Iterator[TextSlot]:
    """A content field that is either a string or a list of parts with a `field` string
    (what every API does with message content)."""
    value = container[key]  # type: ignore[index]
    if isinstance(value, str):
        yield TextSlot(container, key, template, index, ident)
    elif isinstance(value, list):
        for position, part in enumerate(value):
            if isinstance(part, dict) and isinstance(part.get(field), str):
                yield TextSlot(part, field, template, index, ident)
            elif isinstance(part, str):  # some clients send bare strings as parts
                yield TextSlot(value, position, template, index, ident)
