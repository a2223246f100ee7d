// A real OpenID provider for the tests: `oidc-provider` from npm (an OpenID Certified
// implementation) with its development login and consent pages, one confidential client, and
// accounts made up from whatever login is typed: the login is the account's subject and email.
// A login that starts with `unverified` gets `email_verified: false`, to test that such an email
// never links to an existing account.
//
//   node web/tests/oidc-provider.mjs --port 4011 --client-id mealkitz \
//     --client-secret s3cret --redirect-uri http://127.0.0.1:8000/auth/oidc/callback
//
// prints `ready http://127.0.0.1:4011` on stdout once it serves, and runs until SIGTERM. Tests
// in Node can also `import { startProvider }` and run it in their own process.
//
// As OpenID Connect Core §5.4 has it (and oidc-provider by default), the email and profile claims
// are served by the userinfo endpoint, not put in the ID token; `--claims-in-id-token` puts them
// in the ID token as well, as many providers do.

import { generateKeyPairSync } from "node:crypto";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

import Provider from "oidc-provider";

/** The claims of the account a login names. */
export function claimsFor(login) {
  const email = login.includes("@") ? login : `${login}@example.com`;
  const local = email.split("@")[0];
  return {
    sub: login,
    email,
    email_verified: !login.startsWith("unverified"),
    name: `OIDC ${local}`,
    given_name: "OIDC",
    family_name: local,
  };
}

/**
 * Starts the provider on 127.0.0.1:`port` and resolves to { issuer, close() }.
 * `redirectUris` are the client's allowed redirect URIs (exact matches).
 */
export async function startProvider({ port, clientId, clientSecret, redirectUris, claimsInIdToken = false }) {
  const issuer = `http://127.0.0.1:${port}`;
  // A fresh signing key per run, so nothing depends on oidc-provider's development keys.
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: "jwk" }), use: "sig", alg: "RS256", kid: `test-${Date.now()}` };
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    }],
    jwks: { keys: [signingKey] },
    scopes: ["openid", "email", "profile"],
    claims: {
      openid: ["sub"],
      email: ["email", "email_verified"],
      profile: ["name", "given_name", "family_name"],
    },
    conformIdTokenClaims: !claimsInIdToken,
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    async findAccount(_ctx, id) {
      return { accountId: id, claims: async () => claimsFor(id) };
    },
    // Plain http on loopback: the session cookies must not ask for https.
    cookies: { keys: ["oidc-provider-test-cookie-key"], long: { secure: false }, short: { secure: false } },
  });
  // The development pages warn on every start; the tests know.
  provider.on("server_error", (_ctx, error) => console.error("oidc-provider server_error", error));
  const server = provider.listen(port, "127.0.0.1");
  await new Promise((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  return {
    issuer,
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}

const invokedDirectly = process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  const { values } = parseArgs({
    options: {
      port: { type: "string" },
      "client-id": { type: "string", default: "mealkitz" },
      "client-secret": { type: "string" },
      "redirect-uri": { type: "string", multiple: true },
      "claims-in-id-token": { type: "boolean", default: false },
    },
  });
  if (!values.port || !values["client-secret"] || !values["redirect-uri"]) {
    console.error("usage: oidc-provider.mjs --port N --client-secret S --redirect-uri URL [--client-id ID]");
    process.exit(2);
  }
  const running = await startProvider({
    port: Number(values.port),
    clientId: values["client-id"],
    clientSecret: values["client-secret"],
    redirectUris: values["redirect-uri"],
    claimsInIdToken: values["claims-in-id-token"],
  });
  const stop = async () => { await running.close(); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  console.log(`ready ${running.issuer}`);
}
