"""Teams content for generated worlds (``GenOptions.teams``): teams with standard, private
and shared channels, threads with replies, mentions, inline images, file references,
reactions, an edit and a soft delete, a tab, and one-to-one and group chats.

It draws from its own random stream, so a world with teams has exactly the same mail, files,
events, contacts and sites as the same world without them.
"""

from __future__ import annotations

import random
import struct
import zlib
from datetime import datetime, timedelta

from graphsim import teams as tm
from graphsim.routes_teams import new_tab
from graphsim.state import Tenant, User

TEAM_NAMES = ["Finance", "Projects", "Support", "Marketing", "Engineering", "Sales"]
PHRASES = [
    "Can we review the quarterly budget before Friday?",
    "The supplier confirmed delivery for next week.",
    "Les chiffres de novembre sont en ligne.",
    "Please check the draft contract and leave comments.",
    "Das Kick-off-Meeting ist auf Dienstag verschoben.",
    "Invoice 4711 is still waiting for approval.",
    "Great work on the migration, everyone!",
    "Who owns the onboarding checklist now?",
    "Customer feedback from the pilot is attached.",
    "Reminder: the office is closed on Monday.",
]
REPLIES = ["Agreed.", "On it.", "Thanks!", "I'll take a look.", "Done, see the file.", "+1"]


def png(red: int, green: int, blue: int, size: int = 4) -> bytes:
    """A small solid-colour PNG, built by hand so that generated images are real ones."""
    row = b"\x00" + bytes([red, green, blue]) * size
    raw = zlib.compress(row * size)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def generate_teams(tenant: Tenant, users: list[User], count: int, anchor: datetime) -> None:
    licensed = [u for u in users if u.licenses]
    if count <= 0 or len(licensed) < 2:
        return
    rng = random.Random(f"{tenant.seed}:teams:{tenant.index}")
    for n in range(count):
        owner = licensed[n % len(licensed)]
        others = [u for u in licensed if u.id != owner.id]
        team = tm.new_team(
            tenant,
            TEAM_NAMES[n % len(TEAM_NAMES)] + ("" if n < len(TEAM_NAMES) else f" {n + 1}"),
            owners=[owner.id],
            members=[u.id for u in others],
            description=f"{TEAM_NAMES[n % len(TEAM_NAMES)]} team",
            when=anchor - timedelta(days=400),
            key=f"gen:{n}",
        )
        general = next(iter(team.channels.values()))
        new_tab(
            tenant,
            general,
            "Wiki",
            "com.microsoft.teamspace.tab.web",
            {"contentUrl": "https://example.com/wiki", "websiteUrl": "https://example.com/wiki"},
        )
        channels = [general]
        if n == 0:
            channels.append(
                tm.new_channel(
                    tenant,
                    team,
                    "Leadership",
                    membership_type="private",
                    members={owner.id: ["owner"]},
                    when=anchor - timedelta(days=300),
                    key=f"gen:{n}:private",
                )
            )
            channels.append(
                tm.new_channel(
                    tenant,
                    team,
                    "Partners",
                    membership_type="shared",
                    members={owner.id: ["owner"], others[0].id: []},
                    when=anchor - timedelta(days=300),
                    key=f"gen:{n}:shared",
                )
            )
        for index, channel in enumerate(channels):
            _threads(tenant, team, channel, licensed, rng, anchor, 6 if index == 0 else 3)
    _chats(tenant, licensed, rng, anchor)


def _threads(
    tenant: Tenant,
    team: tm.Team,
    channel: tm.Channel,
    people: list[User],
    rng: random.Random,
    anchor: datetime,
    threads: int,
) -> None:
    site = tenant.sites.get(team.site_id or "")
    for t in range(threads):
        when = anchor - timedelta(days=rng.randint(20, 300), minutes=rng.randint(0, 600))
        author = rng.choice(people)
        mentioned = rng.choice(people)
        body = f"<p>{rng.choice(PHRASES)}</p>"
        mentions = []
        hosted = []
        attachments = []
        if t % 2 == 0:
            mentions.append(tm.mention(tenant, 0, mentioned))
            body = f"<p>{tm.mention_markup(0, mentioned)}</p>" + body
        if t % 3 == 0:
            hosted.append(("image/png", png(rng.randrange(256), 80, 160)))
            body += '<p><img src="{hosted:0}" alt="image" itemtype="image"></p>'
        if t % 3 == 1 and site is not None:
            name = f"Notes {t + 1}.docx"
            ref = tm.file_reference(
                f"{site.web_url}/Shared Documents/{channel.display_name}/{name}",
                name,
                f"{channel.id}:{t}",
            )
            attachments.append(ref)
            body += f'<attachment id="{ref["id"]}"></attachment>'
        root = tm.post_message(
            tenant,
            channel,
            author.id,
            body,
            when=when,
            mentions=mentions,
            hosted=hosted,
            attachments=attachments,
            subject="Update" if t == 0 else None,
        )
        for r in range(rng.randint(0, 4)):
            tm.post_message(
                tenant,
                channel,
                rng.choice(people).id,
                f"<p>{rng.choice(REPLIES)}</p>",
                reply_to=root.id,
                when=when + timedelta(hours=r + 1),
            )
        if t % 2 == 1:
            tm.react(tenant, root, rng.choice(people), "like", when + timedelta(hours=6))
        if t == 1:
            tm.edit_message(tenant, root, root.body + "<p>(edited)</p>", when + timedelta(days=1))
        if t == 2 and threads > 3:
            tm.delete_message(tenant, root, when + timedelta(days=2))


def _chats(tenant: Tenant, people: list[User], rng: random.Random, anchor: datetime) -> None:
    pairs = [(people[i], people[i + 1]) for i in range(len(people) - 1)]
    for first, second in pairs:
        chat = tm.new_chat(
            tenant, "oneOnOne", [first.id, second.id], when=anchor - timedelta(days=200)
        )
        for m in range(5):
            when = anchor - timedelta(days=150 - m * 10)
            speaker = first if m % 2 == 0 else second
            tm.post_message(tenant, chat, speaker.id, f"<p>{rng.choice(PHRASES)}</p>", when=when)
    if len(people) >= 3:
        chat = tm.new_chat(
            tenant,
            "group",
            [u.id for u in people],
            topic="Coffee corner",
            when=anchor - timedelta(days=120),
            key="gen:group",
        )
        for m in range(4):
            image = '<p><img src="{hosted:0}" alt="image" itemtype="image"></p>' if m == 0 else ""
            tm.post_message(
                tenant,
                chat,
                people[m % len(people)].id,
                f"<p>{rng.choice(PHRASES)}</p>{image}",
                when=anchor - timedelta(days=100 - m),
                hosted=[("image/png", png(200, 40, 40))] if m == 0 else None,
            )
