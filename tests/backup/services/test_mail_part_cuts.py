"""``PartCuts`` finds, while a message streams by in pieces of any size, the same base64 parts
``_span`` (the split of the whole buffer) finds; and through the repository a large attachment
mailed twice is stored once, the messages read back byte for byte."""

from __future__ import annotations

import base64
import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from graphsim.generator import GenOptions, generate_world
from graphsim.mail import render_mime
from safekeep.backup.services.mail.mime import PART_CUT_MIN, PartCuts, _span, _span_leaves
from safekeep.storage import TenantRepository, generate_data_key
from safekeep.storage.localstore import LocalBlobStore
from tests.backup.services.test_mail_mime_split import messages


def reference_cuts(raw: bytes, min_part: int) -> list[int]:
    """Start and end of each base64 leaf of ``min_part`` bytes or more, from the whole split."""
    cuts: set[int] = set()
    for leaf in _span_leaves(_span(raw, 0, len(raw), 0, None)):
        cte = str(leaf.headers.get("content-transfer-encoding", "")).strip().lower()
        if cte == "base64" and leaf.end - leaf.body >= min_part:
            cuts |= {leaf.body, leaf.end}
    return sorted(c for c in cuts if 0 < c < len(raw))


def streamed_cuts(raw: bytes, min_part: int, rnd: random.Random, largest: int) -> list[int]:
    """The cuts ``PartCuts`` gives for ``raw`` fed in random pieces, checking as it goes that
    no cut comes before what it had said was settled."""
    parts = PartCuts(min_part)
    cuts: list[int] = []
    settled = 0
    at = 0
    while at < len(raw):
        n = rnd.randint(1, largest)
        found = parts.feed(raw[at : at + n])
        at += n
        assert all(c >= settled for c in found), (found, settled)
        cuts += found
        assert parts.settled >= settled
        settled = min(parts.settled, at)
    found = parts.finish()
    assert all(c >= settled for c in found)
    cuts += found
    assert cuts == sorted(cuts)
    return [c for c in cuts if 0 < c < len(raw)]


@settings(max_examples=150, deadline=None)
@given(messages(), st.integers(0, 2**32), st.sampled_from([1, 7, 64, 100_000]))
def test_pieces_give_the_cuts_of_the_whole_split(raw: bytes, seed: int, largest: int) -> None:
    rnd = random.Random(seed)
    assert streamed_cuts(raw, 16, rnd, largest) == reference_cuts(raw, 16)


def test_graphsim_mail_gives_the_cuts_of_the_whole_split() -> None:
    world = generate_world(5, 1, GenOptions(users=4, messages=300, files=0, events=0, contacts=0))
    tenant = next(iter(world.tenants.values()))
    rnd = random.Random(1)
    found = 0
    for item_id in sorted(tenant.items):
        item = tenant.items[item_id]
        if item.kind != "message" or item.spec is None:
            continue
        raw = item.raw_mime or render_mime(item.spec, item.attachments)
        expected = reference_cuts(raw, PART_CUT_MIN)
        assert streamed_cuts(raw, PART_CUT_MIN, rnd, 300_000) == expected
        found += len(expected)
    assert found > 50  # the world has large attachments: the comparison is not vacuous


def _raw(body: str, ctype: str = 'multipart/mixed; boundary="b1"', sep: str = "\r\n") -> bytes:
    text = f"Subject: raw{sep}MIME-Version: 1.0{sep}Content-Type: {ctype}{sep}{sep}{body}"
    return text.encode()


def _b64_part(payload: bytes, sep: str = "\r\n") -> str:
    lines = base64.encodebytes(payload).decode().replace("\n", sep)
    return f"Content-Type: application/pdf{sep}Content-Transfer-Encoding: base64{sep}{sep}{lines}"


def test_rule_bending_mime_gives_the_cuts_of_the_whole_split() -> None:
    blob = random.Random(4).randbytes(3_000)
    shapes = []
    for sep in ("\r\n", "\n"):
        part = _b64_part(blob, sep)
        shapes += [
            # preamble, a look-alike line, blanks after a delimiter, epilogue
            _raw(f"pre --b1{sep}--b1   {sep}{part}--b1x{sep}more{sep}--b1--{sep}epilogue", sep=sep),
            # no closing delimiter, ending with and without a line break
            _raw(f"--b1{sep}{part}", sep=sep),
            _raw(f"--b1{sep}{part.rstrip()}", sep=sep),
            # nested: the inner multipart ends at the outer delimiter, never closed
            _raw(
                f"--b1{sep}Content-Type: multipart/related; boundary=b2{sep}{sep}"
                f"--b2{sep}{part}--b1{sep}{part}--b1--{sep}",
                sep=sep,
            ),
            # a folded Content-Type, in lower case, the boundary quoted on the second line;
            # a Content-Transfer-Encoding in capitals, after a field that only looks like one
            _raw(
                f"--b1{sep}content-type: application/pdf;{sep}\tname=a.pdf{sep}"
                f"X-Content-Transfer-Encoding: 7bit{sep}CONTENT-TRANSFER-ENCODING: BASE64{sep}"
                f"{sep}{base64.encodebytes(blob).decode().replace(chr(10), sep)}--b1--{sep}",
                f'multipart/mixed;{sep} boundary="b1"',
                sep=sep,
            ),
            # one part, base64, no multipart at all
            _raw(base64.encodebytes(blob).decode(), "application/pdf", sep=sep).replace(
                b"MIME-Version", b"Content-Transfer-Encoding: base64\r\nMIME-Version"
            ),
        ]
    rnd = random.Random(9)
    for raw in shapes:
        expected = reference_cuts(raw, 1_000)
        assert expected, raw[:200]
        for largest in (1, 2, 5, 50, 10_000):
            assert streamed_cuts(raw, 1_000, rnd, largest) == expected, (largest, raw[:300])


def test_a_runaway_header_block_ends_the_splitting_not_the_message() -> None:
    raw = _raw("--b1\r\nX-Long: " + "a" * 200_000 + "\r\n\r\nbody\r\n--b1--\r\n")
    parts = PartCuts(16)
    assert parts.feed(raw) == [] and parts.finish() == []
    assert parts.settled > len(raw)


def test_a_flood_of_look_alike_lines_ends_the_splitting_not_the_message() -> None:
    part = _b64_part(random.Random(6).randbytes(3_000))
    for lines, cut in ((100, True), (5_000, False)):
        raw = _raw("--b1\r\n\r\n" + "--x\r\n" * lines + f"--b1\r\n{part}--b1--\r\n")
        parts = PartCuts(1_000)
        assert bool(parts.feed(raw) + parts.finish()) is cut
        assert bool(reference_cuts(raw, 1_000))


async def test_an_attachment_mailed_twice_is_stored_once(tmp_path: Path) -> None:
    attachment = random.Random(2).randbytes(300_000)  # stays inside one chunk without cuts

    def message(n: int) -> bytes:
        return _raw(
            f"--b{n}\r\nContent-Type: text/plain\r\n\r\nmessage {n}\r\n"
            f"--b{n}\r\n{_b64_part(attachment)}--b{n}--\r\n",
            f'multipart/mixed; boundary="b{n}"',
        )

    first, second = message(1), message(22)
    for cuts, stored_once in ((PartCuts, True), (None, False)):
        store = LocalBlobStore(tmp_path / str(cuts))
        repo = TenantRepository(store, tenant_id="t", data_key=generate_data_key())
        refs = []
        try:
            for raw in (first, second):
                refs.append(await repo.put_bytes(raw, cuts=cuts() if cuts else None))
                assert await repo.read_bytes(refs[-1]) == raw
        finally:
            await store.close()
        shared = {c.name for c in refs[0].chunks} & {c.name for c in refs[1].chunks}
        assert bool(shared) is stored_once
        if stored_once:
            # The attachment's stretch is one chunk or, as the tenant's chunker seed falls,
            # two (it is 400 KB against a 1 MiB average): every one of them is stored once.
            assert repo.stats.deduped_chunks == len(shared)
            assert sum(c.size for c in refs[1].chunks if c.name in shared) > 400_000
