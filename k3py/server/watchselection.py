"""Which store events a watch with a label or field selector sees, and as what: upstream's
watch-cache rules (a MODIFIED that leaves the selection is DELETED, sent as the version it
left; one that enters it ADDED).

Registry.watch builds one WatchSelection per such watch. The labels of each object version
come from the Registry's one LabelMemo, keyed by (storage key, revision): all the watchers of
an event, and the next event of the same key (whose old side it is), share one decode. While
a watch selects in a resource, the watches that decode its every event anyway (the
informers') record what they decoded (Registry._watch_stream); none pays for it otherwise."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from k3py.api.objects import loads
from k3py.api.selectors import FieldSelector, LabelSelector
from k3py.server.store.backend import Event, KeyValue

__all__ = ["LabelMemo", "WatchSelection", "LABEL_MEMO_ENTRIES"]

# An old side is found when fewer versions than this were remembered since its key's last
# write: at bench/scale.py's 10,000 pods (three writes each), several thousand. An entry is
# its labels (a few short, interned strings) and its key, about 440 bytes: 7 MB at most.
LABEL_MEMO_ENTRIES = 16_384

_NO_LABELS: dict[str, str] = {}  # shared by every unlabelled version; never changed
_METADATA_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


class LabelMemo:
    """metadata.labels of object versions by (storage key, revision), at most `entries`, the
    one stored first dropped first. A revision is the store's one global counter, so a
    (key, revision) names one stored value for good: an entry never goes stale, and a key
    written again is a new entry. Labels are the same in every served version of a
    resource, so whoever decodes a version may record it."""

    def __init__(self, entries: int = LABEL_MEMO_ENTRIES) -> None:
        # stored first, first: an OrderedDict, whose popitem(last=False) is O(1) (a dict's
        # first key is found by skipping the slots of those already dropped, longer and
        # longer until the dict is resized)
        self._labels: OrderedDict[tuple[str, int], dict[str, str]] = OrderedDict()
        self._entries = entries
        self._selecting: dict[str, int] = {}  # storage prefix -> watches selecting in it

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self, kv: KeyValue) -> dict[str, str]:
        """The labels of `kv`'s object (read them, never change them), decoded if none
        were remembered."""
        found = self._labels.get((kv.key, kv.mod_revision))
        if found is None:
            found = self._put(kv, loads(kv.value))
        return found

    def record(self, kv: KeyValue, obj: dict) -> None:
        """Remember the labels of `obj`, `kv` decoded (in any served version) for a
        watch: its labels are kept, not copied (watchers read objects, never change them)."""
        if (kv.key, kv.mod_revision) not in self._labels:
            self._put(kv, obj)

    def watching(self, prefix: str, change: int) -> None:
        """A watch that selects in the resource stored under `prefix` starts (+1) or
        ends (-1)."""
        count = self._selecting.get(prefix, 0) + change
        if count > 0:
            self._selecting[prefix] = count
        else:
            self._selecting.pop(prefix, None)

    def wanted(self, prefix: str) -> bool:
        """Whether a watch selects in the resource stored under `prefix` (only then is a
        version decoded elsewhere worth recording)."""
        return prefix in self._selecting

    def _put(self, kv: KeyValue, obj: Any) -> dict[str, str]:
        md = obj.get("metadata") if isinstance(obj, dict) else None
        labels = md.get("labels") if isinstance(md, dict) else None
        found = labels if isinstance(labels, dict) and labels else _NO_LABELS
        if self._entries > 0:
            self._labels[(kv.key, kv.mod_revision)] = found
            if len(self._labels) > self._entries:
                self._labels.popitem(last=False)
        return found


class WatchSelection:
    """One watch's selectors, tested on a version's remembered labels and, for
    metadata.name and metadata.namespace, on its storage key; a field selector on any other
    field decodes the version (`decode`), once its labels have matched."""

    def __init__(self, labels: LabelSelector | None, fields: FieldSelector | None,
                 memo: LabelMemo, *, prefix: str, namespaced: bool,
                 decode: Callable[[KeyValue], dict]) -> None:
        self._labels = labels
        self._fields = fields
        self._memo = memo
        self._prefix = prefix  # the resource's storage prefix in all namespaces
        self._namespaced = namespaced
        self._decode = decode
        self._fields_in_key = fields is not None and all(
            f in _METADATA_FIELDS for f, _, _ in fields.terms)
        self._last: tuple[KeyValue, dict] | None = None  # the field test's last decode

    def selects(self, kv: KeyValue) -> bool:
        if self._labels is not None and not self._labels.matches(self._memo.labels(kv)):
            return False
        if self._fields is None:
            return True
        if self._fields_in_key:
            return self._fields.matches(self._key_fields(kv.key))
        obj = self._decode(kv)
        self._last = (kv, obj)
        return self._fields.matches(obj)

    def event(self, ev: Event) -> tuple[str, KeyValue] | None:
        """What a watcher sees of `ev` (None: nothing): its type and the version whose
        object it is sent, at `ev`'s revision. A version's selection is tested on it and,
        for an update, on the version it replaced (first, so that the field test's last
        decode is of `ev.kv`, for `decoded`). An update that leaves the selection is sent
        as upstream's watch cache and etcd3 watcher send it: DELETED, with the object as
        the watcher last saw it (the replaced version), which a client may use to drop it
        from its selected view."""
        if ev.delete:
            return ("DELETED", ev.kv) if self.selects(ev.kv) else None
        if ev.create or ev.prev_kv is None:
            return ("ADDED", ev.kv) if self.selects(ev.kv) else None
        before = self.selects(ev.prev_kv)
        if self.selects(ev.kv):
            return ("MODIFIED" if before else "ADDED"), ev.kv
        return ("DELETED", ev.prev_kv) if before else None

    def decoded(self, kv: KeyValue) -> dict:
        """`kv`'s object decoded: the field test's, handed over, when it was the last."""
        last, self._last = self._last, None
        return last[1] if last is not None and last[0] is kv else self._decode(kv)

    def _key_fields(self, key: str) -> dict:
        """metadata.name and metadata.namespace as the storage key spells them (a name
        has no "/")."""
        rest = key[len(self._prefix):]
        if not self._namespaced:
            return {"metadata": {"name": rest}}
        namespace, _, name = rest.partition("/")
        return {"metadata": {"name": name, "namespace": namespace}}
