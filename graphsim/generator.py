"""Deterministic, realistic tenants: a seed fixes every name, message, file and event.

Only descriptions are built here; MIME and large file bytes are rendered on read, so a
tenant with thousands of messages starts in a fraction of a second per hundred items.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from graphsim import ids, ops
from graphsim.content import (
    JPEG_HEADER,
    MP4_HEADER,
    PNG_HEADER,
    ZIP_HEADER,
    BytesContent,
    Content,
    GeneratedContent,
    make_docx,
    make_pdf,
    make_png,
)
from graphsim.mail import Addr, MailSpec, text_to_html
from graphsim.state import Attachment, Drive, OItem, Sku, Tenant, User, World

ANCHOR = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

FIRST = [
    "Amélie",
    "Björn",
    "Chloé",
    "Dmitri",
    "Élodie",
    "François",
    "Günther",
    "Hélène",
    "Ingrid",
    "José",
    "Kateřina",
    "Łukasz",
    "Mária",
    "Nuño",
    "Øyvind",
    "Priya",
    "Quentin",
    "Renée",
    "Søren",
    "Tomás",
    "Ulrike",
    "Văn",
    "Wiktoria",
    "Xiu",
    "Yusuf",
    "Zoë",
    "Aiko",
    "Bartłomiej",
    "Carmen",
    "Daniel",
    "Emma",
    "Farah",
    "Grace",
    "Hiroshi",
    "Isabel",
    "Jonas",
    "Kenji",
    "Lena",
    "Mohammed",
    "Nora",
    "Olivia",
    "Pedro",
    "Rafael",
    "Sofia",
    "Thomas",
    "Uma",
]
LAST = [
    "Müller",
    "Øster",
    "García",
    "Nguyễn",
    "Kowalski",
    "Dvořák",
    "Åkesson",
    "Fernández",
    "Søndergaard",
    "Ishikawa",
    "O'Brien",
    "Schäfer",
    "Lefèvre",
    "Brontë",
    "Iglesias",
    "Zhang",
    "Haddad",
    "Novák",
    "Costa",
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Taylor",
    "Martin",
    "Dubois",
    "Rossi",
    "Jensen",
    "Nakamura",
    "Petrović",
]
DEPARTMENTS = ["Finance", "Sales", "Engineering", "Legal", "Operations", "Marketing", "HR"]
TITLES = ["Analyst", "Manager", "Engineer", "Director", "Consultant", "Coordinator", "Lead"]
CITIES = [
    ("Zürich", "ZH", "Switzerland", "8001"),
    ("München", "BY", "Germany", "80331"),
    ("São Paulo", "SP", "Brazil", "01310-100"),
    ("Kraków", "MA", "Poland", "30-001"),
    ("Seattle", "WA", "United States", "98101"),
    ("Malmö", "M", "Sweden", "211 19"),
    ("Besançon", "BFC", "France", "25000"),
    ("東京", "Tokyo", "Japan", "100-0001"),
]
STREETS = ["Bahnhofstraße", "Rue de la Paix", "Main Street", "Kungsgatan", "Avenida Paulista"]
TOPICS = [
    "Quarterly report",
    "Budget review",
    "Déjà vu: the server migration",
    "Offsite planning",
    "Contract renewal",
    "Überprüfung der Rechnung",
    "Customer escalation",
    "Hiring plan",
    "Release notes",
    "Board deck",
    "Travel to São Paulo",
    "Security audit findings",
    "Crème brûlée recipe for the party",
    "Invoice 2024-118",
    "Weekly sync",
    "Roadmap draft",
    "プロジェクト進捗",
    "Новый договор",
    "Expense policy update",
    "Incident post-mortem",
    "Welcome aboard!",
    "Licence true-up",
    "Backup restore test",
    "Office move — logistics",
]
SENTENCES = [
    "Please find the latest figures attached.",
    "Could you review this before Thursday?",
    "We agreed to move the deadline by one week.",
    "Let me know if anything is unclear — happy to jump on a call.",
    "The numbers look good, but the forecast needs another pass.",
    "I've added my comments inline.",
    "Merci pour votre retour rapide.",
    "Vielen Dank für die Zusammenfassung.",
    "The customer confirmed the order this morning.",
    "Attached is the signed contract; the original follows by post.",
    "We need a decision on the vendor by Friday.",
    "Reminder: the office is closed on Monday.",
]
EXTERNAL_DOMAINS = ["fabrikam.com", "contoso-partners.net", "northwind.example", "adatum.io"]
FOLDER_TREE = [
    ("inbox", "Projects"),
    ("Projects", "2025"),
    ("2025", "Q4"),
    ("Projects", "Archive Ω"),
    ("inbox", "Receipts"),
    ("inbox", "Newsletters"),
]


@dataclass
class GenOptions:
    users: int = 3
    messages: int = 30
    files: int = 15
    events: int | None = None
    contacts: int | None = None
    sites: int = 2
    list_items: int = 8
    large_files: bool = False


MAIL_FOLDERS = [
    "inbox",
    "Projects",
    "2025",
    "Q4",
    "Archive Ω",
    "Receipts",
    "Newsletters",
    "sentitems",
    "archive",
    "deleteditems",
    "drafts",
    "junkemail",
]
MAIL_FOLDER_WEIGHTS = [40, 6, 4, 3, 2, 5, 5, 18, 6, 4, 2, 2]
DRIVE_TREE = [
    "Documents",
    "Documents/Projects",
    "Documents/Projects/Ålborg 2025",
    "Documents/Projects/Ålborg 2025/Drafts",
    "Pictures",
    "Desktop",
    "Invoices",
    "Notes",
]
FILE_STEMS = [
    "Budget",
    "Meeting notes",
    "Präsentation",
    "Scan",
    "Design",
    "Résumé",
    "Backup",
    "Plan",
    "Report",
    "Übersicht",
    "日報",
]
EVENT_SUBJECTS = [
    "Weekly sync",
    "1:1",
    "Planning",
    "Customer call — Zürich",
    "Design review",
    "Retro",
    "Budget workshop",
    "Café & chat",
    "Interview",
    "All hands",
]
SKUS = [
    (
        "c7df2760-2c81-4ef7-b578-5b5392b571df",
        "ENTERPRISEPREMIUM",
        ["EXCHANGE_S_ENTERPRISE", "SHAREPOINTENTERPRISE", "TEAMS1"],
    ),
    (
        "f245ecc8-75af-4f8e-b61f-27d8114de5f3",
        "O365_BUSINESS_PREMIUM",
        ["EXCHANGE_S_STANDARD", "SHAREPOINTSTANDARD", "TEAMS1"],
    ),
    ("4b9405b0-7788-4568-add1-99614e613b69", "EXCHANGESTANDARD", ["EXCHANGE_S_STANDARD"]),
]


def person_name(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST), rng.choice(LAST)


def ascii_slug(text: str) -> str:
    import unicodedata

    norm = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in norm.lower() if ch.isalnum()) or "user"


def generate_world(seed: int, tenants: int, options: GenOptions) -> World:
    world = World(seed=seed)
    for index in range(tenants):
        tenant = generate_tenant(seed, index, options)
        world.tenants[tenant.id] = tenant
    return world


def new_tenant(seed: int, index: int, name: str | None = None) -> Tenant:
    rng = random.Random(f"{seed}:tenant:{index}")
    org = (
        name
        or rng.choice(
            [
                "Contoso",
                "Fabrikam",
                "Northwind",
                "Tailspin",
                "Woodgrove",
                "Litware",
                "Adventure Works",
                "Wingtip",
            ]
        )
        + f" {index + 1}"
    )
    domain = ascii_slug(org) + ".onmicrosoft.com"
    tenant = Tenant(
        id=ids.guid(seed, "tenant", index),
        index=index,
        name=org,
        domain=domain,
        created=ANCHOR - timedelta(days=900),
        seed=seed,
    )
    for sku_id, part, plans in SKUS:
        tenant.skus[sku_id] = new_sku(sku_id, part, 25, plans)
    return tenant


def new_sku(sku_id: str, part_number: str, units: int, plans: Sequence[str]) -> Sku:
    """A subscription with ``units`` licences whose service plans are provisioned."""
    return Sku(
        sku_id=sku_id,
        part_number=part_number,
        prepaid=units,
        service_plans=[
            {
                "servicePlanId": ids.guid("plan", p),
                "servicePlanName": p,
                "provisioningStatus": "Success",
                "appliesTo": "User",
            }
            for p in plans
        ],
    )


def add_user(
    tenant: Tenant,
    *,
    given: str,
    surname: str,
    licensed: bool = True,
    key: str | None = None,
    when: datetime | None = None,
    sku_id: str | None = None,
) -> User:
    when = when or ANCHOR - timedelta(days=700)
    base = ascii_slug(given) + "." + ascii_slug(surname)
    upn = f"{base}@{tenant.domain}"
    n = 2
    while tenant.user(upn) is not None:
        upn = f"{base}{n}@{tenant.domain}"
        n += 1
    rng = random.Random(f"{tenant.seed}:{tenant.id}:user:{upn}")
    city = rng.choice(CITIES)
    user = User(
        id=ids.guid(tenant.seed, tenant.id, "user", key or upn),
        upn=upn,
        display_name=f"{given} {surname}",
        given_name=given,
        surname=surname,
        job_title=rng.choice(TITLES),
        department=rng.choice(DEPARTMENTS),
        office_location=city[0],
        mobile_phone=f"+41 79 {rng.randint(100, 999)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
        usage_location="CH",
        preferred_language="en-US",
        created=when,
        licenses=[sku_id or next(iter(tenant.skus))] if licensed else [],
        mailbox_enabled=licensed,
    )
    tenant.users[user.id] = user
    if licensed:
        ops.provision_mailbox(tenant, user, when)
        short = tenant.domain.split(".")[0]
        personal_path = "/personal/" + upn.replace("@", "_").replace(".", "_")
        site = ops.new_site(
            tenant,
            personal_path.rsplit("/", 1)[-1],
            user.display_name,
            personal_path,
            when,
            personal=True,
        )
        drive = tenant.drives[site.drive_ids[0]]
        drive.owner_kind = "user"
        drive.owner_id = user.id
        drive.name = "OneDrive"
        drive.web_url = f"https://{short}-my.sharepoint.com{personal_path}/Documents"
        user.drive_id = drive.id
    return user


def generate_tenant(seed: int, index: int, options: GenOptions) -> Tenant:
    tenant = new_tenant(seed, index)
    rng = random.Random(f"{seed}:people:{index}")
    used: set[tuple[str, str]] = set()
    users: list[User] = []
    for n in range(options.users):
        given, surname = person_name(rng)
        while (given, surname) in used and len(used) < len(FIRST) * len(LAST):
            given, surname = person_name(rng)
        used.add((given, surname))
        users.append(add_user(tenant, given=given, surname=surname, key=f"u{n}"))
    tenant.consented_apps = set()
    gen = ContentGen(tenant, options)
    gen.mail(users)
    gen.files(users)
    gen.calendars(users)
    gen.contacts(users)
    gen.sites(users)
    tenant.licensed_seats = sum(1 for u in users if u.licenses)
    return tenant


class ContentGen:
    """Builds one tenant's content from its own random stream."""

    def __init__(self, tenant: Tenant, options: GenOptions) -> None:
        self.tenant = tenant
        self.options = options
        self.rng = random.Random(f"{tenant.seed}:content:{tenant.index}")
        self.shared = [self._attachment_content(n, shared=True) for n in range(10)]

    # -- attachments and files --------------------------------------------------------------

    def _attachment_content(
        self, n: int, *, shared: bool = False, size: int | None = None
    ) -> tuple[str, str, Content]:
        rng = random.Random(f"{self.tenant.seed}:att:{self.tenant.index}:{n}:{shared}")
        kind = rng.choice(["pdf", "docx", "png", "jpg", "txt", "csv", "zip", "xlsx"])
        stem = rng.choice(
            [
                "Report",
                "Invoice",
                "Übersicht",
                "Photo",
                "Notes",
                "Résumé",
                "Contract",
                "Diagram",
                "Export",
                "Plan",
            ]
        )
        name = f"{stem} {n + 1}.{kind}"
        content = self._file_content(
            kind, f"{self.tenant.seed}:{self.tenant.index}:att:{n}:{shared}", rng, size
        )
        return name, ops.guess_mime(name), content

    def _file_content(self, kind: str, key: str, rng: random.Random, size: int | None) -> Content:
        lines = [rng.choice(SENTENCES) for _ in range(rng.randint(3, 30))]
        if size is None:
            if kind == "docx":
                return BytesContent.of(make_docx([f"Document {key}", *lines]))
            if kind == "pdf":
                return BytesContent.of(make_pdf([f"Document {key}", *lines]))
            if kind in ("txt", "md"):
                return BytesContent.of(("\n".join([f"# {key}", *lines]) + "\n").encode())
            if kind == "csv":
                rows = ["date,amount,currency,description"] + [
                    f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
                    f"{rng.randint(1, 99999) / 100:.2f},CHF,{rng.choice(SENTENCES)[:20]}"
                    for _ in range(rng.randint(5, 200))
                ]
                return BytesContent.of(("\n".join(rows) + "\n").encode())
            size = int(
                rng.choice([2_000, 15_000, 60_000, 250_000, 900_000]) * rng.uniform(0.5, 1.5)
            )
        header = {
            "png": PNG_HEADER,
            "jpg": JPEG_HEADER,
            "zip": ZIP_HEADER,
            "xlsx": ZIP_HEADER,
            "docx": ZIP_HEADER,
            "mp4": MP4_HEADER,
            "pdf": b"%PDF-1.7\n",
        }.get(kind, b"")
        return GeneratedContent(size=size, seed=key, header=header)

    # -- mail ---------------------------------------------------------------------------------

    def _addr(self, user: User) -> Addr:
        return Addr(user.display_name, user.upn)

    def _external(self) -> Addr:
        given, surname = person_name(self.rng)
        domain = self.rng.choice(EXTERNAL_DOMAINS)
        return Addr(f"{given} {surname}", f"{ascii_slug(given)}.{ascii_slug(surname)}@{domain}")

    def mail(self, users: list[User]) -> None:
        if not users or self.options.messages <= 0:
            return
        folders = {user.id: self._mail_folders(user) for user in users}
        threads: list[tuple[MailSpec, User]] = []
        for n in range(self.options.messages):
            self._message(n, users, folders, threads)

    def _mail_folders(self, user: User) -> dict[str, str]:
        """The user's folder names to ids: the well-known ones and the ``FOLDER_TREE``."""
        named = dict(user.well_known)
        for parent, child in FOLDER_TREE:
            parent_id = named.get(parent) or named["inbox"]
            folder = ops.new_folder(
                self.tenant,
                user,
                "mail",
                child,
                parent_id,
                key=f"mf:{parent}/{child}",
                when=user.created,
            )
            named[child] = folder.id
        return named

    def _message(
        self,
        n: int,
        users: list[User],
        folders: dict[str, dict[str, str]],
        threads: list[tuple[MailSpec, User]],
    ) -> None:
        """Message ``n``: who, where, a thread it may answer, body and attachments. The
        random draws keep their order, so a seed's world stays the same."""
        tenant, rng = self.tenant, self.rng
        owner = users[n % len(users)] if n < len(users) else rng.choice(users)
        when = ANCHOR - timedelta(minutes=rng.randint(60, 365 * 24 * 60))
        colleague = rng.choice(users)
        where = rng.choices(MAIL_FOLDERS, weights=MAIL_FOLDER_WEIGHTS)[0]
        sent = where in ("sentitems", "drafts")
        sender = (
            self._addr(owner)
            if sent
            else (
                self._addr(colleague)
                if colleague is not owner and rng.random() < 0.4
                else self._external()
            )
        )
        to = [self._external() if sent else self._addr(owner)]
        cc = [self._external() for _ in range(rng.choice([0, 0, 1, 2]))]
        subject = rng.choice(TOPICS)
        in_reply_to = None
        references: list[str] = []
        if threads and rng.random() < 0.3:
            parent_spec, _ = rng.choice(threads[-50:])
            subject = "RE: " + parent_spec.subject.removeprefix("RE: ")
            in_reply_to = parent_spec.message_id
            references = [*parent_spec.references, parent_spec.message_id][-10:]
        paragraphs = [rng.choice(SENTENCES) for _ in range(rng.randint(1, 6))]
        greeting = f"Hi {to[0].name.split()[0]},"
        text = "\n\n".join([greeting, *paragraphs, f"Best regards,\n{sender.name}"]) + "\n"
        html, attachments = self._mail_attachments(n, when, text_to_html(text))
        spec = MailSpec(
            subject=subject,
            sender=sender,
            to=to,
            cc=cc,
            sent=when,
            received=when + timedelta(seconds=rng.randint(1, 90)),
            message_id=f"<{ids.guid(tenant.seed, tenant.id, 'msg', n)}@{tenant.domain}>",
            text=text,
            html=html,
            in_reply_to=in_reply_to,
            references=references,
            importance=rng.choices(["normal", "high", "low"], [90, 8, 2])[0],
        )
        if rng.random() < 0.04 and threads:
            attachments.append(self._attached_message(n, owner, when, threads))
        ops.new_item(
            tenant,
            owner,
            "message",
            folders[owner.id][where],
            spec=spec,
            attachments=attachments,
            when=spec.received,
            key=f"m{n}",
            props={
                "isRead": sent or rng.random() < 0.7,
                "isDraft": where == "drafts",
                "categories": rng.choice([[], [], [], ["Blue category"], ["Red category"]]),
                "flag": {
                    "flagStatus": rng.choices(["notFlagged", "flagged", "complete"], [85, 10, 5])[0]
                },
            },
        )
        threads.append((spec, owner))

    def _mail_attachments(self, n: int, when: datetime, html: str) -> tuple[str, list[Attachment]]:
        """An inline image (and the HTML that shows it), files, a large one every 40th
        message, now and then a reference attachment."""
        tenant, rng = self.tenant, self.rng
        attachments: list[Attachment] = []
        if rng.random() < 0.15:
            cid = f"image{n}@{tenant.domain}"
            html = html.replace("</body>", f'<p><img src="cid:{cid}" alt="logo"></p></body>')
            png = BytesContent.of(make_png(48 + (n % 5) * 16, 24, tenant.seed * 31 + n % 5))
            attachments.append(
                Attachment(
                    id="",
                    kind="file",
                    name=f"image{n % 5}.png",
                    content_type="image/png",
                    modified=when,
                    content=png,
                    content_id=cid,
                    is_inline=True,
                )
            )
        for a in range(rng.choice([0, 0, 0, 1, 1, 2, 3])):
            if rng.random() < 0.5:
                name, ctype, content = rng.choice(self.shared)
            else:
                name, ctype, content = self._attachment_content(10_000 + n * 10 + a)
            attachments.append(
                Attachment(
                    id="",
                    kind="file",
                    name=name,
                    content_type=ctype,
                    modified=when,
                    content=content,
                )
            )
        if n % 40 == 39:
            attachments.append(self._big_attachment(n, 3_400_000 + n, when))
        if self.options.large_files and n in (13, 113):
            attachments.append(self._big_attachment(n, 26_500_000 + n * 1000, when))
        if rng.random() < 0.03:
            attachments.append(
                Attachment(
                    id="",
                    kind="reference",
                    name="Shared plan.docx",
                    content_type=None,
                    modified=when,
                    source_url=f"https://{tenant.domain.split('.')[0]}-my."
                    f"sharepoint.com/personal/shared/Shared%20plan.docx",
                )
            )
        return html, attachments

    def _attached_message(
        self, n: int, owner: User, when: datetime, threads: list[tuple[MailSpec, User]]
    ) -> Attachment:
        """An earlier message of the thread, attached as an item (not stored on its own)."""
        tenant = self.tenant
        inner_spec, _ = self.rng.choice(threads[-20:])
        inner = ops.new_item(
            tenant,
            owner,
            "message",
            "",
            spec=inner_spec,
            props={"isRead": True},
            when=when,
            key=f"inner:{n}",
        )
        tenant.members.get("", {}).pop(inner.id, None)
        del tenant.items[inner.id]
        return Attachment(
            id="",
            kind="item",
            name=inner_spec.subject,
            content_type=None,
            modified=when,
            item=inner,
        )

    def _big_attachment(self, n: int, size: int, when: datetime) -> Attachment:
        kind = "zip" if size > 10_000_000 else "pdf"
        content = GeneratedContent(
            size=size,
            seed=f"{self.tenant.seed}:{self.tenant.index}:big:{n}",
            header=ZIP_HEADER if kind == "zip" else b"%PDF-1.7\n",
        )
        name = f"Large scan {n}.{kind}"
        return Attachment(
            id="",
            kind="file",
            name=name,
            content_type=ops.guess_mime(name),
            modified=when,
            content=content,
        )

    # -- drives -------------------------------------------------------------------------------

    def files(self, users: list[User]) -> None:
        tenant = self.tenant
        drives = [tenant.drives[u.drive_id] for u in users if u.drive_id]
        if not drives or self.options.files <= 0:
            return
        shared_files = self._shared_files()
        for n in range(self.options.files):
            self._file(n, drives[n % len(drives)], shared_files)
        if self.options.large_files:
            drive = drives[0]
            parent = ops.drive_folder_path(tenant, drive, "Videos", drive.owner_id)
            ops.new_drive_item(
                tenant,
                drive,
                parent,
                "All-hands recording.mp4",
                content=GeneratedContent(
                    size=105 * 1024 * 1024 + 17,
                    seed=f"{tenant.seed}:{tenant.index}:video",
                    header=MP4_HEADER,
                ),
                by=drive.owner_id,
                when=ANCHOR - timedelta(days=3),
                key="video",
            )

    def _shared_files(self) -> list[tuple[str, Content]]:
        """Files many users keep a copy of (the same bytes in several drives)."""
        tenant = self.tenant
        return [
            (
                f"Company handbook {n + 1}.pdf",
                self._file_content(
                    "pdf", f"{tenant.seed}:{tenant.index}:handbook:{n}", random.Random(n), None
                ),
            )
            for n in range(3)
        ] + [
            (
                f"Team photo {n + 1}.jpg",
                GeneratedContent(
                    size=180_000 + n * 7_000,
                    seed=f"{tenant.seed}:{tenant.index}:photo:{n}",
                    header=JPEG_HEADER,
                ),
            )
            for n in range(3)
        ]

    def _file(self, n: int, drive: Drive, shared_files: list[tuple[str, Content]]) -> None:
        """File ``n`` of the tenant, in a folder of ``drive``, with older versions at times."""
        tenant, rng = self.tenant, self.rng
        owner = drive.owner_id
        when = ANCHOR - timedelta(minutes=rng.randint(60, 600 * 24 * 60))
        folder_path = rng.choice(["", *DRIVE_TREE])
        parent = ops.drive_folder_path(tenant, drive, folder_path, owner, when)
        if rng.random() < 0.15:
            name, content = rng.choice(shared_files)
        else:
            name, content = self._own_file(n)
        if drive.child_named(parent.id, name) is not None:
            name = f"{n} {name}"
        item = ops.new_drive_item(
            tenant, drive, parent, name, content=content, by=owner, when=when, key=f"file:{n}"
        )
        if rng.random() < 0.12:
            for v in range(rng.randint(1, 3)):
                older = self._file_content(
                    "txt", f"{tenant.seed}:{tenant.index}:file:{n}:v{v}", rng, None
                )
                item.versions.insert(
                    0,
                    ops.Version(
                        id=f"{v + 1}.0",
                        content=older,
                        modified=when - timedelta(days=10 - v),
                        modified_by=owner,
                    ),
                )

    def _own_file(self, n: int) -> tuple[str, Content]:
        tenant, rng = self.tenant, self.rng
        kind = rng.choices(
            ["docx", "pdf", "txt", "csv", "md", "png", "jpg", "zip", "xlsx", "bin"],
            [15, 15, 12, 8, 6, 12, 12, 6, 8, 6],
        )[0]
        stem = rng.choice(FILE_STEMS)
        name = f"{stem} {n + 1}.{kind}"
        size = (
            None
            if kind in ("docx", "pdf", "txt", "csv", "md")
            else int(
                rng.choice([12, 900, 40_000, 300_000, 1_500_000, 4_500_000]) * rng.uniform(0.8, 1.2)
            )
        )
        if n % 97 == 96:
            size = 12_000_000 + n
        return name, self._file_content(kind, f"{tenant.seed}:{tenant.index}:file:{n}", rng, size)

    # -- calendars ------------------------------------------------------------------------------

    def calendars(self, users: list[User]) -> None:
        count = self.options.events
        if count is None:
            count = max(len(users) * 3, self.options.messages // 8) if self.options.messages else 0
        for n in range(count):
            self._event(n, users)

    def _event(self, n: int, users: list[User]) -> None:
        """Event ``n``: every 5th a series (daily or weekly, some without end), some series
        with a moved and a cancelled occurrence, now and then an attachment."""
        tenant, rng = self.tenant, self.rng
        user = users[n % len(users)]
        start = (ANCHOR + timedelta(days=rng.randint(-120, 120))).replace(
            hour=rng.choice([8, 9, 10, 11, 13, 14, 15, 16]), minute=rng.choice([0, 30])
        )
        minutes = rng.choice([30, 30, 60, 60, 90, 120])
        attendees = [
            u for u in rng.sample(users, min(len(users), rng.randint(0, 3))) if u is not user
        ]
        subject = rng.choice(EVENT_SUBJECTS)
        recurrence = self._recurrence(n, start) if n % 5 == 0 else None
        props = event_props(
            subject=subject,
            body=f"<html><body><p>{rng.choice(SENTENCES)}</p></body></html>",
            start=start,
            end=start + timedelta(minutes=minutes),
            organizer=Addr(user.display_name, user.upn),
            attendees=[Addr(u.display_name, u.upn) for u in attendees],
            location=rng.choice(["Room Göteborg", "Teams", "Café Noir", "HQ 4.12", ""]),
            recurrence=recurrence,
            categories=rng.choice([[], ["Blue category"]]),
            is_all_day=False,
        )
        event = ops.new_item(
            tenant,
            user,
            "event",
            user.default_calendar,
            props=props,
            when=start - timedelta(days=20),
            key=f"ev{n}",
        )
        event.props["iCalUId"] = (
            "040000008200E00074C5B7101A82E008" + ids.digest(event.id, size=28).hex().upper()
        )
        if recurrence is not None and n % 3 == 0:
            _move_and_cancel(event, start, minutes)
        if rng.random() < 0.1:
            name, ctype, content = rng.choice(self.shared)
            event.attachments.append(
                Attachment(
                    id=ids.attachment_id(event.id, 0),
                    kind="file",
                    name=name,
                    content_type=ctype,
                    modified=event.created,
                    content=content,
                )
            )
            event.props["hasAttachments"] = True

    def _recurrence(self, n: int, start: datetime) -> dict[str, Any]:
        pattern: dict[str, Any] = {
            "type": "weekly",
            "interval": 1,
            "month": 0,
            "dayOfMonth": 0,
            "daysOfWeek": [start.strftime("%A").lower()],
            "firstDayOfWeek": "sunday",
            "index": "first",
        }
        if n % 10 == 5:
            pattern = {
                "type": "daily",
                "interval": 1,
                "month": 0,
                "dayOfMonth": 0,
                "firstDayOfWeek": "sunday",
                "index": "first",
            }
        rng_range: dict[str, Any] = {
            "type": "numbered",
            "startDate": start.date().isoformat(),
            "endDate": "0001-01-01",
            "recurrenceTimeZone": "UTC",
            "numberOfOccurrences": self.rng.choice([5, 10, 20]),
        }
        if n % 15 == 0:
            rng_range = {**rng_range, "type": "noEnd", "numberOfOccurrences": 0}
        return {"pattern": pattern, "range": rng_range}

    # -- contacts -------------------------------------------------------------------------------

    def contacts(self, users: list[User]) -> None:
        tenant, rng = self.tenant, self.rng
        count = self.options.contacts
        if count is None:
            count = max(len(users) * 2, self.options.messages // 15) if self.options.messages else 0
        sub: dict[str, str] = {}
        for user in users:
            folder = ops.new_folder(
                tenant,
                user,
                "contact",
                "Clients",
                user.contacts_root,
                key="cf:clients",
                when=user.created,
            )
            sub[user.id] = folder.id
        for n in range(count):
            user = users[n % len(users)]
            given, surname = person_name(rng)
            folder_id = sub[user.id] if rng.random() < 0.3 else user.contacts_root
            contact = ops.new_item(
                tenant,
                user,
                "contact",
                folder_id,
                props=contact_props(rng, given, surname),
                when=ANCHOR - timedelta(days=rng.randint(1, 600)),
                key=f"c{n}",
            )
            if n % 4 == 0:  # a photo for every fourth contact, kept as its only "attachment"
                contact.attachments.append(
                    Attachment(
                        id=ids.attachment_id(contact.id, "photo"),
                        kind="file",
                        name="photo.jpg",
                        content_type="image/jpeg",
                        modified=contact.created,
                        content=GeneratedContent(
                            size=4_000 + (n % 7) * 512,
                            seed=f"{tenant.seed}:{tenant.index}:photo:{n}",
                            header=JPEG_HEADER,
                        ),
                    )
                )

    # -- sites ------------------------------------------------------------------------------------

    def sites(self, users: list[User]) -> None:
        tenant, rng = self.tenant, self.rng
        if self.options.sites <= 0:
            return
        when = ANCHOR - timedelta(days=800)
        by = users[0].id if users else ""
        root = ops.new_site(tenant, "root", "Communication site", "", when, is_root=True)
        team_names = ["Finance", "Projects", "Human Resources", "Ventes", "Engineering"]
        sites = [root] + [
            ops.new_site(
                tenant,
                name.replace(" ", ""),
                name,
                "/sites/" + name.replace(" ", ""),
                when,
                description=f"{name} team site",
            )
            for name in team_names[: max(0, self.options.sites - 1)]
        ]
        for site in sites:
            drive = tenant.drives[site.drive_ids[0]]
            for n in range(max(1, self.options.files // 10)):
                folder = ops.drive_folder_path(
                    tenant, drive, rng.choice(["", "General", "General/Policies"]), by
                )
                name = f"{site.display_name} doc {n + 1}.docx"
                if drive.child_named(folder.id, name) is None:
                    ops.new_drive_item(
                        tenant,
                        drive,
                        folder,
                        name,
                        content=BytesContent.of(
                            make_docx([site.display_name, rng.choice(SENTENCES)])
                        ),
                        by=by,
                        when=when + timedelta(days=n),
                        key=f"sitefile:{site.id}:{n}",
                    )
            tracker = ops.new_list(
                tenant,
                site,
                "Issue tracker",
                "Issue tracker",
                "genericList",
                when,
                columns=[
                    {"name": "Title", "displayName": "Title", "text": {}},
                    {
                        "name": "Status",
                        "displayName": "Status",
                        "choice": {"choices": ["New", "Active", "Resolved"]},
                    },
                    {"name": "Priority", "displayName": "Priority", "number": {}},
                    {"name": "Owner", "displayName": "Owner", "text": {}},
                ],
            )
            for n in range(self.options.list_items):
                ops.new_list_item(
                    tenant,
                    tracker,
                    {
                        "Title": f"{rng.choice(TOPICS)} #{n + 1}",
                        "Status": rng.choice(["New", "Active", "Resolved"]),
                        "Priority": rng.randint(1, 3),
                        "Owner": rng.choice(users).display_name if users else "",
                    },
                    by,
                    when + timedelta(days=n),
                )
            ops.new_list(
                tenant, site, "Sharing Links", "Sharing Links", "sharingLinks", when, hidden=True
            )


def _dt(value: datetime) -> dict[str, str]:
    return {
        "dateTime": value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000"),
        "timeZone": "UTC",
    }


def _move_and_cancel(event: OItem, start: datetime, minutes: int) -> None:
    """Move the 2nd occurrence of a series two hours later and cancel the 3rd."""
    from graphsim.calendar import occurrence_dates

    dates = occurrence_dates(event, start.date(), start.date() + timedelta(days=200))
    if len(dates) > 3:
        moved = dates[1]
        event.exceptions[moved.isoformat()] = {
            "subject": event.props["subject"] + " (moved)",
            "start": _dt(datetime.combine(moved, start.timetz()) + timedelta(hours=2)),
            "end": _dt(
                datetime.combine(moved, start.timetz()) + timedelta(hours=2, minutes=minutes)
            ),
        }
        event.cancelled.append(dates[2].isoformat())


def event_props(
    *,
    subject: str,
    body: str,
    start: datetime,
    end: datetime,
    organizer: Addr,
    attendees: list[Addr],
    location: str,
    recurrence: dict[str, Any] | None,
    categories: list[str],
    is_all_day: bool,
) -> dict[str, Any]:
    return {
        "subject": subject,
        "body": {"contentType": "html", "content": body},
        "start": _dt(start),
        "end": _dt(end),
        "originalStartTimeZone": "UTC",
        "originalEndTimeZone": "UTC",
        "isAllDay": is_all_day,
        "showAs": "busy",
        "sensitivity": "normal",
        "importance": "normal",
        "categories": categories,
        "reminderMinutesBeforeStart": 15,
        "isReminderOn": True,
        "isCancelled": False,
        "isOrganizer": True,
        "responseRequested": True,
        "hideAttendees": False,
        "allowNewTimeProposals": True,
        "isDraft": False,
        "isOnlineMeeting": location == "Teams",
        "onlineMeetingProvider": "teamsForBusiness" if location == "Teams" else "unknown",
        "location": {
            "displayName": location,
            "locationType": "default",
            "uniqueIdType": "unknown" if not location else "private",
            "uniqueId": location or None,
        },
        "locations": [{"displayName": location, "locationType": "default"}] if location else [],
        "recurrence": recurrence,
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "organizer": organizer.graph(),
        "attendees": [
            {
                "type": "required",
                "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
                **a.graph(),
            }
            for a in attendees
        ],
        "hasAttachments": False,
    }


def _phone(rng: random.Random, prefix: str) -> str:
    return f"{prefix} {rng.randint(100, 999)} {rng.randint(10, 99)} {rng.randint(10, 99)}"


def _address(rng: random.Random, place: tuple[str, str, str, str]) -> dict[str, str]:
    city, state, country, postcode = place
    return {
        "street": f"{rng.choice(STREETS)} {rng.randint(1, 200)}",
        "city": city,
        "state": state,
        "countryOrRegion": country,
        "postalCode": postcode,
    }


def contact_props(rng: random.Random, given: str, surname: str) -> dict[str, Any]:
    company = rng.choice(
        [
            "Fabrikam",
            "Northwind Traders",
            "Adatum",
            "Société Générale de Café",
            "Müller & Söhne GmbH",
        ]
    )
    place = rng.choice(CITIES)
    email_domain = ascii_slug(company)[:12] + ".example"
    return {
        "givenName": given,
        "surname": surname,
        "displayName": f"{given} {surname}",
        "fileAs": f"{surname}, {given}",
        "middleName": None,
        "nickName": None,
        "title": None,
        "initials": f"{given[0]}.{surname[0]}.",
        "generation": None,
        "companyName": company,
        "jobTitle": rng.choice(TITLES),
        "department": rng.choice(DEPARTMENTS),
        "officeLocation": None,
        "profession": None,
        "businessHomePage": f"https://www.{email_domain}",
        "assistantName": None,
        "manager": None,
        "spouseName": None,
        "personalNotes": rng.choice(["", "Met at the Zürich conference.", "Prefers phone calls."]),
        "birthday": date(
            rng.randint(1950, 2000), rng.randint(1, 12), rng.randint(1, 28)
        ).isoformat()
        + "T11:59:00Z"
        if rng.random() < 0.5
        else None,
        "emailAddresses": [
            {
                "name": f"{given} {surname}",
                "address": f"{ascii_slug(given)}.{ascii_slug(surname)}@{email_domain}",
            },
            {
                "name": f"{given} {surname}",
                "address": f"{ascii_slug(given)}{rng.randint(1, 99)}@mail.example",
            },
        ][: rng.choice([1, 2, 2])],
        "imAddresses": [],
        "businessPhones": [_phone(rng, "+41 44")],
        "homePhones": [_phone(rng, "+41 43")] if rng.random() < 0.4 else [],
        "mobilePhone": _phone(rng, "+41 79"),
        "children": [],
        "categories": [],
        "businessAddress": _address(rng, place),
        "homeAddress": _address(rng, place) if rng.random() < 0.5 else {},
        "otherAddress": {},
        "yomiGivenName": None,
        "yomiSurname": None,
        "yomiCompanyName": None,
    }
