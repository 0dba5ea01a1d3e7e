"""The services from ``scripts/services`` are the real servers and do what the project needs.

These tests are the contract between the suite and its infrastructure: if SeaweedFS stopped
refusing a delete under Object Lock, or OpenSearch lost its analysis-common module, the storage
and search tests built on them would prove nothing, so it is checked here, directly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx
import pika
import pika.exceptions
import psycopg
import pytest
import redis
import stripe
from botocore.exceptions import ClientError
from opensearchpy import AsyncOpenSearch, OpenSearch, helpers
from sqlalchemy.engine import make_url

from tests.fixtures.services import (
    create_database,
    delete_bucket,
    delete_prefixed,
    drop_database,
    rabbitmq_api,
    rabbitmq_test_vhost,
    redis_test_database,
    unique_name,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import PutObjectOutputTypeDef


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code"))


# --- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_is_a_real_server_tuned_for_tests(postgres_admin_url: str) -> None:
    with psycopg.connect(_dsn(postgres_admin_url)) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (["fsync", "synchronous_commit", "full_page_writes", "listen_addresses"],),
            ).fetchall()
        )
        can_create = conn.execute(
            "SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert version is not None
    assert int(version[0]) >= 150000
    assert settings == {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "listen_addresses": "127.0.0.1",
    }
    assert can_create == (True,)


def test_postgres_databases_are_created_cloned_and_dropped(postgres_admin_url: str) -> None:
    template, clone = unique_name("sk_tpl_"), unique_name("sk_clone_")
    template_url = create_database(postgres_admin_url, template)
    try:
        assert make_url(template_url).database == template
        assert make_url(template_url).drivername == make_url(postgres_admin_url).drivername
        with psycopg.connect(_dsn(template_url)) as conn:
            conn.execute("CREATE TABLE tenant (id int PRIMARY KEY, name text NOT NULL)")
            conn.execute("INSERT INTO tenant VALUES (1, 'Contoso')")

        clone_url = create_database(postgres_admin_url, clone, template=template)
        with psycopg.connect(_dsn(clone_url)) as conn:
            assert conn.execute("SELECT name FROM tenant").fetchall() == [("Contoso",)]
            conn.execute("INSERT INTO tenant VALUES (2, 'Fabrikam')")
            conn.commit()
            # drop_database must also get rid of a database someone is still connected to.
            drop_database(postgres_admin_url, clone)
        with psycopg.connect(_dsn(template_url)) as conn:
            assert conn.execute("SELECT count(*) FROM tenant").fetchone() == (1,)
    finally:
        drop_database(postgres_admin_url, clone)
        drop_database(postgres_admin_url, template)

    with psycopg.connect(_dsn(postgres_admin_url)) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)", ([template, clone],)
        ).fetchall()
    assert left == []
    drop_database(postgres_admin_url, clone)  # dropping what is not there is not an error


# --- Redis ------------------------------------------------------------------------------------


def test_restart_and_stop_keep_data_on_private_instances() -> None:
    """``restart`` and ``stop --keep-data`` keep what PostgreSQL and Redis hold, and a plain
    ``stop`` still removes everything. Private instances (own folder and ports): the shared
    ones serve every other test."""
    from tests.faults.conftest import private_instances

    with private_instances() as services:
        dsn = _dsn(services.postgres_admin_url)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('before restart')")
        with redis.Redis.from_url(services.redis_url(3)) as client:
            client.set("kept", "before restart")
        out = services.run("restart", "postgres", "redis")
        assert "data kept" in out
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == ("before restart",)
        with redis.Redis.from_url(services.redis_url(3)) as client:
            assert client.get("kept") == b"before restart"
            client.set("kept", "before stop")
        services.run("stop", "--keep-data", "redis")
        assert (services.folder / "redis.kept").exists()
        services.run("start", "redis")
        with redis.Redis.from_url(services.redis_url(3)) as client:
            assert client.get("kept") == b"before stop"
        services.run("stop", "redis")
        services.run("start", "redis")
        with redis.Redis.from_url(services.redis_url(3)) as client:
            assert client.get("kept") is None  # a plain stop starts afresh


def test_redis_gives_each_test_a_database_of_its_own(redis_url: str) -> None:
    number = int(redis_url.rsplit("/", 1)[1])
    assert number >= 1  # database 0 hands out the others
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
        info = client.info("server")
        assert int(str(info["redis_version"]).split(".")[0]) >= 6
        assert int(client.config_get("databases")["databases"]) >= 64
        assert client.config_get("save")["save"] == ""  # no persistence: nothing to clean up
        client.set("lease:tenant-1", "worker-a", nx=True, px=5000)
        assert client.set("lease:tenant-1", "worker-b", nx=True, px=5000) is None
        assert client.get("lease:tenant-1") == b"worker-a"
        assert 0 < int(client.pttl("lease:tenant-1")) <= 5000
        # Scripts run server-side, as the shared throttling limiter needs.
        assert client.eval("return redis.call('incrby', KEYS[1], ARGV[1])", 1, "n", 41) == 41


def test_redis_database_is_flushed_before_and_after(
    redis_server_url: str, redis_database_count: int
) -> None:
    # Leave a key in the database the next claim will get, as a crashed earlier run would.
    with redis.Redis.from_url(redis_server_url) as admin:
        ticket = int(admin.get("safekeep-tests:next-database") or 0)
    upcoming = f"{redis_server_url}/{1 + ticket % (redis_database_count - 1)}"
    with redis.Redis.from_url(upcoming) as stale:
        stale.set("left-behind", "1")

    with redis_test_database(redis_server_url, redis_database_count) as url:
        assert url == upcoming
        with redis.Redis.from_url(url) as client:
            assert client.dbsize() == 0
            client.set("written-by-this-test", "1")
    with redis.Redis.from_url(upcoming) as after:
        assert after.dbsize() == 0


# --- RabbitMQ ---------------------------------------------------------------------------------


def _amqp(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


def test_rabbitmq_round_trip_in_a_vhost_of_its_own(
    rabbitmq_url: str, rabbitmq_server_url: str, rabbitmq_http_url: str
) -> None:
    with rabbitmq_api(rabbitmq_server_url, rabbitmq_http_url) as api:
        version = api.get("/overview").json()["rabbitmq_version"]
    assert tuple(int(n) for n in version.split(".")[:2]) >= (3, 10)
    vhost = urlsplit(rabbitmq_url).path.lstrip("/")
    assert vhost.startswith("sk-test-")

    connection = _amqp(rabbitmq_url)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("backup", durable=True)
        channel.basic_publish("", "backup", b"task-1", mandatory=True)
        method, _properties, body = channel.basic_get("backup", auto_ack=True)
        assert method is not None and body == b"task-1"
        # With confirms, a publish nothing can route is refused rather than dropped: Dramatiq's
        # RabbitMQ broker relies on this to declare a deleted queue again.
        with pytest.raises(pika.exceptions.UnroutableError):
            channel.basic_publish("", "no-such-queue", b"lost", mandatory=True)
    finally:
        connection.close()

    # Another vhost (here the server's default one) does not see this test's queue.
    default = _amqp(rabbitmq_server_url)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as missing:
            default.channel().queue_declare("backup", passive=True)
        assert missing.value.reply_code == 404
    finally:
        default.close()


def test_rabbitmq_checks_credentials_and_vhost(rabbitmq_url: str) -> None:
    parts = urlsplit(rabbitmq_url)
    wrong_password = rabbitmq_url.replace(f":{parts.password}@", ":not-the-password@")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        _amqp(wrong_password)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        _amqp(f"{rabbitmq_url}-missing")


def test_rabbitmq_vhost_is_deleted_with_its_queues_and_connections(
    rabbitmq_server_url: str, rabbitmq_http_url: str
) -> None:
    with rabbitmq_test_vhost(rabbitmq_server_url, rabbitmq_http_url) as url:
        vhost = urlsplit(url).path.lstrip("/")
        connection = _amqp(url)
        channel = connection.channel()
        channel.queue_declare("default", durable=True)
        channel.basic_publish("", "default", b"left behind")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        connection.process_data_events(time_limit=5)
    assert closed.value.reply_code == 320  # CONNECTION_FORCED: the vhost is gone
    with rabbitmq_api(rabbitmq_server_url, rabbitmq_http_url) as api:
        assert api.get(f"/vhosts/{vhost}").status_code == 404
        assert api.get(f"/queues/{vhost}/default").status_code == 404


# --- S3 (SeaweedFS) ---------------------------------------------------------------------------


def test_s3_put_get_list_delete(s3_client: S3Client, s3_bucket: str) -> None:
    body = uuid.uuid4().bytes * 1000
    put = s3_client.put_object(Bucket=s3_bucket, Key="tenants/t1/chunks/ab", Body=body)
    assert put["ETag"]
    got = s3_client.get_object(Bucket=s3_bucket, Key="tenants/t1/chunks/ab")
    assert got["Body"].read() == body
    ranged = s3_client.get_object(Bucket=s3_bucket, Key="tenants/t1/chunks/ab", Range="bytes=0-15")
    assert ranged["Body"].read() == body[:16]
    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="tenants/t1/")
    assert [o["Key"] for o in listed.get("Contents", [])] == ["tenants/t1/chunks/ab"]
    s3_client.delete_object(Bucket=s3_bucket, Key="tenants/t1/chunks/ab")
    with pytest.raises(ClientError) as missing:
        s3_client.head_object(Bucket=s3_bucket, Key="tenants/t1/chunks/ab")
    assert _error_code(missing.value) in {"404", "NoSuchKey"}


def test_s3_presigned_url_and_multipart_upload(s3_client: S3Client, s3_bucket: str) -> None:
    part = b"x" * (5 * 1024 * 1024)  # S3's minimum size for all parts but the last
    upload = s3_client.create_multipart_upload(Bucket=s3_bucket, Key="exports/e1.zip")
    etags = [
        s3_client.upload_part(
            Bucket=s3_bucket,
            Key="exports/e1.zip",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=data,
        )["ETag"]
        for number, data in ((1, part), (2, b"tail"))
    ]
    s3_client.complete_multipart_upload(
        Bucket=s3_bucket,
        Key="exports/e1.zip",
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]
        },
    )
    url = s3_client.generate_presigned_url(
        "get_object", Params={"Bucket": s3_bucket, "Key": "exports/e1.zip"}, ExpiresIn=60
    )
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200
    assert answer.content == part + b"tail"
    # A wrong signature is refused: the server really checks credentials.
    assert httpx.get(url.replace("Signature=", "Signature=0"), timeout=30).status_code == 403


def put_locked(
    s3_client: S3Client,
    bucket: str,
    key: str,
    body: bytes,
    mode: Literal["GOVERNANCE", "COMPLIANCE"],
    until: datetime,
) -> PutObjectOutputTypeDef:
    """Write one object version that the bucket's object lock holds in ``mode`` until then."""
    return s3_client.put_object(
        Bucket=bucket, Key=key, Body=body, ObjectLockMode=mode, ObjectLockRetainUntilDate=until
    )


def test_s3_object_lock_governance(s3_client: S3Client, s3_locked_bucket: str) -> None:
    bucket = s3_locked_bucket
    assert s3_client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    lock = s3_client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"

    until = datetime.now(UTC) + timedelta(hours=1)
    first = put_locked(s3_client, bucket, "blob", b"v1", "GOVERNANCE", until)
    second = s3_client.put_object(Bucket=bucket, Key="blob", Body=b"v2")
    assert first["VersionId"] != second["VersionId"]
    old = s3_client.get_object(Bucket=bucket, Key="blob", VersionId=first["VersionId"])
    assert old["Body"].read() == b"v1"
    head = s3_client.head_object(Bucket=bucket, Key="blob", VersionId=first["VersionId"])
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert abs((head["ObjectLockRetainUntilDate"] - until).total_seconds()) < 2

    with pytest.raises(ClientError) as refused:
        s3_client.delete_object(Bucket=bucket, Key="blob", VersionId=first["VersionId"])
    assert _error_code(refused.value) == "AccessDenied"
    # Without a version id, a delete only adds a delete marker: the locked version stays.
    marker = s3_client.delete_object(Bucket=bucket, Key="blob")
    assert marker["DeleteMarker"] is True
    assert s3_client.get_object(Bucket=bucket, Key="blob", VersionId=first["VersionId"])
    # Governance gives way to a caller allowed to bypass it (our test credential is admin).
    s3_client.delete_object(
        Bucket=bucket, Key="blob", VersionId=first["VersionId"], BypassGovernanceRetention=True
    )
    versions = s3_client.list_object_versions(Bucket=bucket, Prefix="blob").get("Versions", [])
    assert {v["VersionId"] for v in versions} == {second["VersionId"]}


def test_s3_object_lock_compliance_and_legal_hold(
    s3_client: S3Client, s3_locked_bucket: str
) -> None:
    bucket = s3_locked_bucket
    until = datetime.now(UTC) + timedelta(seconds=3)
    put = put_locked(s3_client, bucket, "chunk", b"kept", "COMPLIANCE", until)
    for bypass in (False, True):
        with pytest.raises(ClientError) as refused:
            s3_client.delete_object(
                Bucket=bucket,
                Key="chunk",
                VersionId=put["VersionId"],
                BypassGovernanceRetention=bypass,
            )
        assert _error_code(refused.value) == "AccessDenied"
    batch = s3_client.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "chunk", "VersionId": put["VersionId"]}]},
        BypassGovernanceRetention=True,
    )
    assert [e["Code"] for e in batch.get("Errors", [])] == ["AccessDenied"]

    held = s3_client.put_object(Bucket=bucket, Key="held", Body=b"evidence")
    s3_client.put_object_legal_hold(
        Bucket=bucket, Key="held", VersionId=held["VersionId"], LegalHold={"Status": "ON"}
    )
    with pytest.raises(ClientError):
        s3_client.delete_object(
            Bucket=bucket, Key="held", VersionId=held["VersionId"], BypassGovernanceRetention=True
        )

    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.0)
    s3_client.delete_object(Bucket=bucket, Key="chunk", VersionId=put["VersionId"])
    # The legal hold is lifted by the fixture's teardown, which must then delete the bucket.


def test_s3_default_retention_and_bucket_teardown(s3_client: S3Client) -> None:
    bucket = unique_name("sk-test-locked-")
    s3_client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3_client.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    put = s3_client.put_object(Bucket=bucket, Key="a", Body=b"a")
    head = s3_client.head_object(Bucket=bucket, Key="a", VersionId=put["VersionId"])
    assert head["ObjectLockMode"] == "GOVERNANCE"
    with pytest.raises(ClientError):
        s3_client.delete_object(Bucket=bucket, Key="a", VersionId=put["VersionId"])
    with pytest.raises(ClientError) as not_empty:
        s3_client.delete_bucket(Bucket=bucket)
    assert _error_code(not_empty.value) == "BucketNotEmpty"

    assert delete_bucket(s3_client, bucket) is True
    names = {b["Name"] for b in s3_client.list_buckets().get("Buckets", [])}
    assert bucket not in names


# --- OpenSearch -------------------------------------------------------------------------------

MAIL_INDEX_BODY: dict[str, Any] = {
    "settings": {
        "number_of_shards": 1,
        "number_of_replicas": 0,
        "analysis": {
            "analyzer": {
                "folded": {
                    "type": "custom",
                    "tokenizer": "standard",
                    "filter": ["lowercase", "asciifolding"],
                },
                "prefix": {
                    "type": "custom",
                    "tokenizer": "prefix_grams",
                    "filter": ["lowercase", "asciifolding"],
                },
            },
            "tokenizer": {
                "prefix_grams": {
                    "type": "edge_ngram",
                    "min_gram": 2,
                    "max_gram": 15,
                    "token_chars": ["letter", "digit"],
                }
            },
        },
    },
    "mappings": {
        "properties": {
            "tenant_id": {"type": "keyword"},
            "subject": {"type": "text", "analyzer": "folded"},
            "body": {"type": "text", "analyzer": "standard"},
            "attachment_names": {
                "type": "text",
                "analyzer": "prefix",
                "search_analyzer": "folded",
            },
            "received": {"type": "date"},
        }
    },
}

MESSAGES = [
    {
        "tenant_id": "t1",
        "subject": "Réunion trimestrielle à Zürich",
        "body": "The quarterly review moves to Thursday.",
        "attachment_names": "Prévisions-2026.xlsx",
        "received": "2026-03-02T09:00:00Z",
    },
    {
        "tenant_id": "t1",
        "subject": "Invoice overdue",
        "body": "Please pay the invoice before the quarterly close.",
        "attachment_names": "invoice-4411.pdf",
        "received": "2026-03-03T10:00:00Z",
    },
    {
        "tenant_id": "t2",
        "subject": "Reunion dinner",
        "body": "Another tenant's mail that must not leak.",
        "attachment_names": "menu.docx",
        "received": "2026-03-04T11:00:00Z",
    },
]


@pytest.fixture
async def opensearch_client(opensearch_url: str) -> AsyncIterator[AsyncOpenSearch]:
    client = AsyncOpenSearch(hosts=[opensearch_url], timeout=30)
    yield client
    await client.close()


async def test_opensearch_is_the_real_thing(opensearch_client: AsyncOpenSearch) -> None:
    info = await opensearch_client.info()
    assert info["version"]["distribution"] == "opensearch"
    assert info["version"]["number"].startswith("2.19.")
    health = await opensearch_client.cluster.health()
    assert health["status"] in {"green", "yellow"}
    modules = {p["component"] for p in await opensearch_client.cat.plugins(format="json")}
    assert "org.opensearch.analysis.common.CommonAnalysisPlugin" in modules


async def test_opensearch_analyzers_bulk_highlight_and_aliases(
    opensearch_client: AsyncOpenSearch, opensearch_index_prefix: str
) -> None:
    client = opensearch_client
    v1, v2, alias = (
        f"{opensearch_index_prefix}-mail-v1",
        f"{opensearch_index_prefix}-mail-v2",
        f"{opensearch_index_prefix}-mail",
    )
    await client.indices.create(index=v1, body={**MAIL_INDEX_BODY, "aliases": {alias: {}}})

    tokens = await client.indices.analyze(
        index=v1, body={"analyzer": "folded", "text": "Réunion à Zürich"}
    )
    assert [t["token"] for t in tokens["tokens"]] == ["reunion", "a", "zurich"]

    actions = [{"_index": alias, "_id": str(i), "_source": m} for i, m in enumerate(MESSAGES)]
    indexed, errors = await helpers.async_bulk(client, actions, refresh="wait_for")
    assert (indexed, errors) == (3, [])

    found = await client.search(
        index=alias,
        body={
            "query": {
                "bool": {
                    "must": {"multi_match": {"query": "reunion", "fields": ["subject", "body"]}},
                    "filter": {"term": {"tenant_id": "t1"}},
                }
            },
            "highlight": {"fields": {"subject": {}}, "pre_tags": ["<b>"], "post_tags": ["</b>"]},
        },
    )
    hits = found["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["0"]
    assert hits[0]["highlight"]["subject"] == ["<b>Réunion</b> trimestrielle à Zürich"]

    # edge_ngram at index time: typing the start of an attachment name finds it.
    partial = await client.search(
        index=alias, body={"query": {"match": {"attachment_names": "previs"}}}
    )
    assert [h["_id"] for h in partial["hits"]["hits"]] == ["0"]

    # Reindex into a new version and swap the alias atomically, as a mapping migration would.
    await client.indices.create(index=v2, body=MAIL_INDEX_BODY)
    await client.reindex(body={"source": {"index": v1}, "dest": {"index": v2}}, refresh=True)
    await client.indices.update_aliases(
        body={
            "actions": [
                {"remove": {"index": v1, "alias": alias}},
                {"add": {"index": v2, "alias": alias}},
            ]
        }
    )
    assert list(await client.indices.get_alias(name=alias)) == [v2]
    count = await client.count(index=alias, body={"query": {"term": {"tenant_id": "t1"}}})
    assert count["count"] == 2


def test_opensearch_prefix_teardown_removes_indices_and_aliases(opensearch_url: str) -> None:
    prefix = unique_name("sk-test-")
    other = unique_name("sk-other-")
    with OpenSearch(hosts=[opensearch_url], timeout=30) as client:
        client.indices.create(index=f"{prefix}-a", body={"aliases": {f"{prefix}-alias": {}}})
        client.indices.create(index=other, body={"aliases": {f"{prefix}-foreign": {}}})
        try:
            delete_prefixed(client, prefix)
            assert not client.indices.exists(index=f"{prefix}-a")
            assert client.indices.exists(index=other)
            assert client.indices.get_alias(index=other)[other]["aliases"] == {}
        finally:
            client.indices.delete(index=other, ignore_unavailable=True)


# --- stripe-mock ------------------------------------------------------------------------------


def test_stripe_mock_answers_the_stripe_library(stripe_api_base: str) -> None:
    client = stripe.StripeClient(
        "sk_test_123", base_addresses={"api": stripe_api_base}, max_network_retries=0
    )
    customer = client.v1.customers.create(
        params={"email": "billing@msp.example", "metadata": {"msp_id": "msp-1"}}
    )
    assert customer.object == "customer"
    assert customer.id.startswith("cus_")
    fetched = client.v1.customers.retrieve(customer.id)
    assert fetched.object == "customer"
    # stripe-mock validates requests against Stripe's OpenAPI document, as Stripe does.
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.create(params={"no_such_parameter": "x"})  # type: ignore[arg-type]


async def test_services_answer_concurrently(
    opensearch_client: AsyncOpenSearch, stripe_api_base: str
) -> None:
    """The async clients the project uses work on the suite's shared event loop."""
    async with httpx.AsyncClient(base_url=stripe_api_base, auth=("sk_test_123", "")) as http:
        info, balance = await asyncio.gather(opensearch_client.info(), http.get("/v1/balance"))
    assert info["cluster_name"] == "safekeep-test"
    assert balance.status_code == 200
    assert balance.json()["object"] == "balance"
