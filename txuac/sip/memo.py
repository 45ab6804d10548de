"""Header texts parsed recently and what they parsed to: the same text in the next message
of a dialog is copied instead of parsed again.

A proxied call carries the same From, To, Contact, Route and Request-URI texts in up to
seven messages and in the copies the proxy makes of each; the REGISTERs sent to one
registrar share their Request-URI, and a registrar that makes its nonce from the time
challenges a whole second of them with one text. Copying a parsed value costs a tenth of
parsing it again; an immutable one (a digest challenge) is shared.
"""

from __future__ import annotations

from typing import Final, Generic, TypeVar

T = TypeVar("T")

#: Texts a memo holds before it forgets them all.
DEFAULT_CAPACITY: Final = 256
#: Longer texts are parsed every time: they are rare, and kept they would weigh the most.
DEFAULT_LONGEST: Final = 256


class ParseMemo(Generic[T]):
    """A bounded map from a text to the value it parsed to, a prototype no caller holds.

    A text's value is kept the second time it is parsed: most texts (a registration's
    Contact, a call's branch) are parsed once, and for them the memo costs one insertion,
    not a copy. Only parses that succeed are kept, so an error is raised (and named) each
    time. When ``capacity`` texts are held the next one clears the map: whatever arrives,
    it holds at most ``capacity`` texts of at most ``longest`` characters, and a flood of
    distinct texts costs an insertion each, with no eviction order to maintain.
    """

    __slots__ = ("_entries", "capacity", "longest")

    def __init__(self, capacity: int = DEFAULT_CAPACITY, longest: int = DEFAULT_LONGEST) -> None:
        self._entries: dict[str, T | None] = {}  # None: parsed once, not kept
        self.capacity = capacity
        self.longest = longest

    def recall(self, text: str) -> T | None:
        """The prototype ``text`` parsed to, or None; the caller copies it before handing it out."""
        return self._entries.get(text)

    def parsed_before(self, text: str) -> bool:
        """Whether ``text`` was parsed before (its value is then worth keeping); notes it if not."""
        entries = self._entries
        if text in entries:
            return True
        if len(text) <= self.longest:
            if len(entries) >= self.capacity:
                entries.clear()
            entries[text] = None
        return False

    def keep(self, text: str, prototype: T) -> None:
        """Remember ``prototype`` (a value no caller holds) as what ``text`` parses to, when
        ``text`` is noted (parsed_before() said so): only parsed_before() adds a text."""
        entries = self._entries
        if text in entries:
            entries[text] = prototype

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


__all__ = ["DEFAULT_CAPACITY", "DEFAULT_LONGEST", "ParseMemo"]
