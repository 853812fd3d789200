// A real OpenID Connect provider for the tests: `oidc-provider` (the reference implementation,
// pinned in package.json) on 127.0.0.1, port 0, with one client for Runbase and an interaction
// that logs in, without a form, whichever test user was last chosen.
//
// Protocol, over stdin/stdout:
//   1. prints `OIDC_PROVIDER_URL=http://127.0.0.1:PORT` (the issuer) as soon as it listens;
//   2. reads one line `CLIENT client_id client_secret redirect_uri` (the test starts Runbase in
//      between, so the redirect URI is known), then prints `READY`;
//   3. exits when stdin closes, or after 10 minutes whatever happens.
//
// Test-only endpoints (not part of OpenID Connect):
//   GET /__test/user?sub=S&email=E&email_verified=true|false  the user the next login signs in
//   GET /__test/id_token?ttl=SECONDS&delay_ms=MS               ID token lifetime, and a delay
//        added to the token endpoint's answer (to let a short-lived ID token expire in transit)

import http from 'node:http';
import crypto from 'node:crypto';
import readline from 'node:readline';
import Provider from 'oidc-provider';

const LIFETIME_MS = 10 * 60 * 1000;
setTimeout(() => process.exit(0), LIFETIME_MS).unref();

let user = { sub: 'user-1', email: 'user-1@example.com', email_verified: true };
let idTokenTtl = 600;
let tokenDelayMs = 0;
let provider = null;

function key(type, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid: `${alg}-${crypto.randomUUID()}`, alg, use: 'sig' };
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

function testEndpoint(req, res, url) {
  const q = url.searchParams;
  if (url.pathname === '/__test/user') {
    user = { sub: q.get('sub'), email: q.get('email'), email_verified: q.get('email_verified') === 'true' };
  } else if (url.pathname === '/__test/id_token') {
    idTokenTtl = Number(q.get('ttl') ?? 600);
    tokenDelayMs = Number(q.get('delay_ms') ?? 0);
  } else {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(204).end();
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname.startsWith('/__test/')) return testEndpoint(req, res, url);
  if (!provider) return res.writeHead(503).end();
  if (url.pathname.startsWith('/interaction/')) {
    interaction(req, res).catch((e) => {
      console.error(e);
      res.writeHead(500).end(String(e));
    });
    return;
  }
  if (url.pathname === '/token' && tokenDelayMs > 0) {
    // The answer (with the ID token already minted) is held back.
    const end = res.end.bind(res);
    res.end = (...args) => {
      setTimeout(() => end(...args), tokenDelayMs);
      return res;
    };
  }
  provider.callback()(req, res);
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  console.log(`OIDC_PROVIDER_URL=${issuer}`);
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('close', () => process.exit(0));
  lines.on('line', (line) => {
    const [word, clientId, clientSecret, redirectUri] = line.trim().split(/\s+/);
    if (word !== 'CLIENT' || provider) return;
    provider = new Provider(issuer, {
      clients: [{
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [redirectUri],
        response_types: ['code'],
        grant_types: ['authorization_code'],
        token_endpoint_auth_method: 'client_secret_basic',
      }],
      jwks: {
        keys: [
          key('rsa', { modulusLength: 2048 }, 'RS256'),
          key('ec', { namedCurve: 'P-256' }, 'ES256'),
        ],
      },
      async findAccount(ctx, sub) {
        // Whoever the current test user is, under the subject asked for.
        const claims = sub === user.sub ? user : { sub };
        return { accountId: sub, async claims() { return { ...claims, sub }; } };
      },
      claims: { openid: ['sub'], email: ['email', 'email_verified'] },
      // Put the email claims in the ID token, as Google does.
      conformIdTokenClaims: false,
      features: { devInteractions: { enabled: false } },
      interactions: { url: (ctx, i) => `/interaction/${i.uid}` },
      pkce: { required: () => true },
      ttl: {
        IdToken: () => idTokenTtl,
        AuthorizationCode: 60,
        Interaction: 600,
        Session: 600,
        Grant: 600,
        AccessToken: 600,
      },
      cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    });
    provider.on('grant.error', (ctx, err) => console.error(`grant.error: ${err.message} ${err.error_description ?? ''}`));
    console.log('READY');
  });
});
