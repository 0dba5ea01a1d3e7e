// A partner portal's journey through Safekeep with the generated TypeScript client: create a
// tenant, connect it, set its policy, back it up, browse, download an item and an export.
// tests/e2e/test_generated_clients.py runs it against a live server; it prints one JSON line.
import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

const baseUrl = required("SAFEKEEP_API_URL");
const client = createClient<paths>({
  baseUrl,
  headers: { Authorization: `Bearer ${required("SAFEKEEP_API_KEY")}` },
});

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function must<T>(answer: { data?: T; error?: unknown; response: Response }, what: string): T {
  if (answer.data === undefined) {
    throw new Error(`${what}: ${answer.response.status} ${JSON.stringify(answer.error)}`);
  }
  return answer.data;
}

async function waitUntil<T>(fetch: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + 240_000;
  for (;;) {
    const value = await fetch();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

const FINISHED = ["succeeded", "partial", "failed", "cancelled"];

const tenant = must(
  await client.POST("/v1/tenants", {
    body: { name: required("SIM_TENANT_NAME"), domain: required("SIM_TENANT_DOMAIN") },
  }),
  "create tenant",
);
const tenant_id = tenant.id;

// The client's admin grants consent in a browser; this is that browser (not the client's job).
const consent = await fetch(tenant.consent_url, { redirect: "manual" });
const back = new URL(consent.headers.get("location") ?? "");
const callback = await fetch(`${baseUrl}${back.pathname}${back.search}`);
const connected = (await callback.json()) as { consent_state: string };
if (connected.consent_state !== "granted") throw new Error(JSON.stringify(connected));

const discovery = await waitUntil(
  async () =>
    must(await client.GET("/v1/tenants/{tenant_id}/jobs", { params: { path: { tenant_id } } }), "jobs"),
  (page) => page.items.length > 0 && FINISHED.includes(page.items[0]!.status),
);
if (discovery.items[0]!.status !== "succeeded") throw new Error("discovery failed");

must(
  await client.PUT("/v1/tenants/{tenant_id}/policy", {
    params: { path: { tenant_id } },
    body: { services: ["onedrive"] },
  }),
  "policy",
);

const started = must(
  await client.POST("/v1/tenants/{tenant_id}/backups", { params: { path: { tenant_id } } }),
  "start backup",
);
const job = await waitUntil(
  async () =>
    must(await client.GET("/v1/jobs/{job_id}", { params: { path: { job_id: started.id } } }), "job"),
  (j) => FINISHED.includes(j.status),
);

const accounts = must(
  await client.GET("/v1/tenants/{tenant_id}/accounts", { params: { path: { tenant_id } } }),
  "accounts",
);
let found: { account_id: string; item_id: string; name: string; size: number } | undefined;
for (const account of accounts.items) {
  const listing = await client.GET("/v1/tenants/{tenant_id}/accounts/{account_id}/items", {
    params: { path: { tenant_id, account_id: account.id }, query: { service: "onedrive" } },
  });
  const file = listing.data?.items.find((item) => !item.is_folder);
  if (file) {
    found = { account_id: account.id, item_id: file.id, name: file.name, size: file.size };
    break;
  }
}
if (!found) throw new Error("no backed-up file to browse");

// The seats whose backups stopped: none that this backup reached.
const stopped = must(
  await client.GET("/v1/tenants/{tenant_id}/accounts", {
    params: {
      path: { tenant_id },
      query: { protected: true, not_backed_up_since: job.started_at ?? new Date().toISOString() },
    },
  }),
  "stopped seats",
);
const backedUp = new Set(accounts.items.filter((a) => a.last_backup_at).map((a) => a.id));
// The same across every client tenant of the MSP, in one request.
const stoppedEverywhere = must(
  await client.GET("/v1/accounts", {
    params: {
      query: { protected: true, not_backed_up_since: job.started_at ?? new Date().toISOString() },
    },
  }),
  "stopped seats of every tenant",
);

// A webhook moved to another description and its secret rotated: what an update leaves out
// is not sent, and the rotation answers a new secret with the old one's overlap.
const webhook = must(
  await client.POST("/v1/webhooks", {
    body: { url: "https://hooks.example.com/safekeep", events: ["export.ready"] },
  }),
  "create webhook",
);
const changed = must(
  await client.PATCH("/v1/webhooks/{webhook_id}", {
    params: { path: { webhook_id: webhook.id } },
    body: { description: "Partner portal" },
  }),
  "update webhook",
);
const rotated = must(
  await client.POST("/v1/webhooks/{webhook_id}/secret", {
    params: { path: { webhook_id: webhook.id } },
    body: { previous_secret_expires_in: 3600 },
  }),
  "rotate secret",
);

const content = must(
  await client.GET("/v1/tenants/{tenant_id}/accounts/{account_id}/items/{item_id}/content", {
    params: { path: { tenant_id, account_id: found.account_id, item_id: found.item_id } },
    parseAs: "arrayBuffer",
  }),
  "content",
);

const exported = must(
  await client.POST("/v1/tenants/{tenant_id}/exports", {
    params: { path: { tenant_id } },
    body: { scope: { type: "service", account_id: found.account_id, service: "onedrive" } },
  }),
  "create export",
);
const ready = await waitUntil(
  async () =>
    must(
      await client.GET("/v1/exports/{export_id}", {
        params: { path: { export_id: exported.id } },
      }),
      "export",
    ),
  (e) => ["ready", "failed", "expired"].includes(e.status),
);
if (ready.status !== "ready") throw new Error(`export ${ready.status}`);
const zip = Buffer.from(
  must(
    await client.GET("/v1/exports/{export_id}/download", {
      params: { path: { export_id: exported.id } },
      parseAs: "arrayBuffer",
    }),
    "download export",
  ),
);

console.log(
  JSON.stringify({
    tenant_id,
    backup: job.status,
    item_size: found.size,
    content_bytes: content.byteLength,
    export_zip_magic: zip.subarray(0, 2).toString("latin1"),
    // ZIP headers carry file names as they are: the downloaded file is in the archive.
    manifest_has_item: zip.includes(Buffer.from(found.name, "utf8")) && zip.includes("manifest.json"),
    backed_up_seats: backedUp.size,
    stopped_among_backed_up: stopped.items.filter((a) => backedUp.has(a.id)).length,
    stopped_everywhere_among_backed_up: stoppedEverywhere.items.filter((a) => backedUp.has(a.id))
      .length,
    stopped_everywhere_of_the_tenant: stoppedEverywhere.items
      .filter((a) => a.tenant_id === tenant_id)
      .map((a) => a.id)
      .sort()
      .join(",") === stopped.items.map((a) => a.id).sort().join(","),
    webhook_kept_url: changed.url === webhook.url && changed.description === "Partner portal",
    secret_rotated: !!rotated.secret && rotated.secret !== webhook.secret,
    previous_secret_expires_at: rotated.previous_secret_expires_at,
  }),
);
