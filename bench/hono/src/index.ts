// Benchmark only, not part of Portcullis: the bench policy's routes and checks as a plain Hono
// worker, to compare with the Portcullis Worker on workerd (see bench/notes.md).
//
// - GET /public/*: forwarded, no auth.
// - GET /jwt/*: a bearer JWT, HS256 (`hono/jwt`, the shared secret) or RS256/ES256 (`hono/jwk`,
//   the public JWKs, key chosen by `kid`), with `iss`, `aud`, `exp` checked and `sub` required.
// - POST /orders: the same JWT, a body of at most `body.max_bytes` (`hono/body-limit`), JSON
//   content type, the body validated against the policy's JSON Schema (`hono/validator` calling
//   `@cfworker/json-schema`), then forwarded.
// - GET /limited: the same JWT, then `quota.limit` requests per `sub` per `quota.window_s`,
//   counted in a Durable Object (one per consumer, a fixed window), else 429.
//
// Every value comes from the run, as vars (bench/run passes them with `--var`): `BENCH_CONFIG`
// (`hono-config.json` from `portcullis-bench fixtures`: origin, issuer, audiences, JWKS,
// algorithms, body limit and schema, quota), `BENCH_HS_SECRET` (the secret the Portcullis policy
// names) and, optionally, `BENCH_LOG` = "1" for one JSON line per request on `console.log`, as
// the Portcullis Worker writes, and `BENCH_QUOTA_CALL` = "fetch" to call the quota object with
// `fetch` and a JSON body, as the Portcullis Worker does, instead of by RPC.

import { DurableObject } from "cloudflare:workers";
import { Validator } from "@cfworker/json-schema";
import { Hono, type Context, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { jwk } from "hono/jwk";
import { jwt } from "hono/jwt";
import { validator } from "hono/validator";

type Env = {
  BENCH_CONFIG: string;
  BENCH_HS_SECRET: string;
  BENCH_LOG?: string;
  BENCH_QUOTA_CALL?: string;
  QUOTAS: DurableObjectNamespace<QuotaCounter>;
};

type Claims = { sub?: unknown; exp?: unknown };

type App = { Bindings: Env; Variables: { jwtPayload: Claims } };

/** What `portcullis-bench fixtures` takes from the Portcullis bench policy. */
type Config = {
  origin: string;
  issuer: string;
  audiences: string[];
  algorithms: ("RS256" | "ES256")[];
  jwks: { keys: JsonWebKey[] };
  body: { max_bytes: number; content_types: string[]; schema: object };
  quota: { name: string; limit: number; window_s: number };
};

/** Everything built from the config, once per isolate. */
type Setup = {
  config: Config;
  hs256: MiddlewareHandler<App>;
  asymmetric: MiddlewareHandler<App>;
  bodyLimit: MiddlewareHandler<App>;
  schema: Validator;
};

let built: { raw: string; secret: string; setup: Setup } | undefined;

function setup(env: Env): Setup {
  if (built?.raw === env.BENCH_CONFIG && built.secret === env.BENCH_HS_SECRET) {
    return built.setup;
  }
  const config = JSON.parse(env.BENCH_CONFIG) as Config;
  const verification = { iss: config.issuer, aud: config.audiences };
  const setup: Setup = {
    config,
    hs256: jwt({ secret: env.BENCH_HS_SECRET, alg: "HS256", verification }),
    asymmetric: jwk({
      keys: config.jwks.keys as Parameters<typeof jwk>[0]["keys"],
      alg: config.algorithms,
      verification,
    }),
    bodyLimit: bodyLimit({ maxSize: config.body.max_bytes }),
    schema: new Validator(config.body.schema, "2020-12"),
  };
  built = { raw: env.BENCH_CONFIG, secret: env.BENCH_HS_SECRET, setup };
  return setup;
}

/** The `alg` of a compact JWS's header, or undefined when it cannot be read. */
function tokenAlg(authorization: string | undefined): string | undefined {
  const token = authorization?.match(/^bearer\s+([^.\s]+)\./i)?.[1];
  if (!token) return undefined;
  try {
    const json = atob(token.replace(/-/g, "+").replace(/_/g, "/"));
    const alg = (JSON.parse(json) as { alg?: unknown }).alg;
    return typeof alg === "string" ? alg : undefined;
  } catch {
    return undefined;
  }
}

/** HS256 tokens go to `hono/jwt` with the secret; every other one to `hono/jwk`, which takes
 * only the configured asymmetric algorithms. Then `exp` and `sub` must be present, as the
 * Portcullis policy requires (Hono checks `exp` only when a token has one). */
const authenticate: MiddlewareHandler<App> = async (c, next) => {
  const s = setup(c.env);
  const verify = tokenAlg(c.req.header("authorization")) === "HS256" ? s.hs256 : s.asymmetric;
  return verify(c, async () => {
    const claims = c.get("jwtPayload");
    if (typeof claims.exp !== "number" || typeof claims.sub !== "string") {
      throw new HTTPException(401, { message: "the token needs exp and sub" });
    }
    await next();
  });
};

/** The client's request to the origin: same method, path, query and headers, plus the consumer
 * as a header. The origin's answer is streamed back. */
function forward(c: Context<App>, body?: BodyInit): Promise<Response> {
  const origin = setup(c.env).config.origin.replace(/\/$/, "");
  const url = new URL(c.req.url);
  const headers = new Headers(c.req.raw.headers);
  const sub = c.get("jwtPayload")?.sub;
  if (typeof sub === "string") headers.set("x-consumer", sub);
  return fetch(origin + url.pathname + url.search, {
    method: c.req.method,
    headers,
    body: body ?? c.req.raw.body,
    redirect: "manual",
  });
}

/** One consumer's requests in the current window. Durable Object input gates run one request
 * at a time around storage, so read-count-write is atomic per consumer. */
export class QuotaCounter extends DurableObject<Env> {
  /** Count one request; true when it is within `limit` for the window. */
  async take(limit: number, windowMs: number): Promise<boolean> {
    const now = Date.now();
    const storage = this.ctx.storage;
    let window = await storage.get<{ start: number; count: number }>("window");
    if (!window || now >= window.start + windowMs) {
      window = { start: now, count: 0 };
      await storage.setAlarm(now + windowMs);
    }
    if (window.count >= limit) return false;
    window.count += 1;
    await storage.put("window", window);
    return true;
  }

  /** `take` for a `fetch` with the JSON body `{limit, window_ms}`: `{allowed}`. */
  async fetch(request: Request): Promise<Response> {
    const { limit, window_ms } = (await request.json()) as { limit: number; window_ms: number };
    return Response.json({ allowed: await this.take(limit, window_ms) });
  }

  /** The window is over: forget it. */
  async alarm(): Promise<void> {
    await this.ctx.storage.deleteAll();
  }
}

const quota: MiddlewareHandler<App> = async (c, next) => {
  const { name, limit, window_s } = setup(c.env).config.quota;
  const sub = String(c.get("jwtPayload").sub);
  const counter = c.env.QUOTAS.get(c.env.QUOTAS.idFromName(`${name}:${sub}`));
  const window_ms = window_s * 1000;
  let allowed: boolean;
  if (c.env.BENCH_QUOTA_CALL === "fetch") {
    const body = JSON.stringify({ limit, window_ms });
    const answer = await counter.fetch("https://quota/take", { method: "POST", body });
    allowed = ((await answer.json()) as { allowed: boolean }).allowed;
  } else {
    allowed = await counter.take(limit, window_ms);
  }
  if (!allowed) {
    return c.text("quota exceeded", 429, { "retry-after": String(window_s) });
  }
  await next();
};

const app = new Hono<App>();

app.use(async (c, next) => {
  if (c.env.BENCH_LOG !== "1") return next();
  const started = Date.now();
  await next();
  const sub = c.get("jwtPayload")?.sub;
  console.log(
    JSON.stringify({
      time: new Date(started).toISOString(),
      request_id: crypto.randomUUID(),
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      consumer: typeof sub === "string" ? sub : null,
      gateway_us: (Date.now() - started) * 1000,
    }),
  );
});

app.get("/public/*", (c) => forward(c));

app.get("/jwt/*", authenticate, (c) => forward(c));

app.post(
  "/orders",
  authenticate,
  (c, next) => setup(c.env).bodyLimit(c, next),
  validator("json", (value, c) => {
    const s = setup(c.env);
    const media = (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
    if (!s.config.body.content_types.includes(media)) {
      return c.text("unsupported content type", 415);
    }
    const result = s.schema.validate(value);
    if (!result.valid) return c.json({ errors: result.errors }, 422);
    return value as unknown;
  }),
  (c) => forward(c, JSON.stringify(c.req.valid("json"))),
);

app.get("/limited", authenticate, quota, (c) => forward(c));

export default app;
