// Drives Debian's chromium (playwright-core) through GraphiQL as a user would; run by
// tests/e2e/test_graphiql_browser.py against the real stack (gunicorn workers behind nginx):
//
//   node graphiql.mjs '{"base": "http://127.0.0.1:PORT", "token": "...", "screenshot": "...",
//                      "corsAllowed": "http://127.0.0.1:P2", "corsDenied": "http://localhost:P2"}'
//
// 1. loads GraphiQL from `${base}/graphql` and runs `{ hello }` over HTTP;
// 2. runs `subscription { countdown(from: 3) }` over WebSocket (graphql-transport-ws) and records
//    every frame the page receives;
// 3. puts `{"Authorization": "Bearer <token>"}` in the headers editor, runs `createNote` (which
//    needs a signed-in user), saves a screenshot, and runs a subscription whose connection_init
//    must carry the token;
// 4. from pages on two other origins (a listed one and an unlisted one), calls the API with
//    fetch: CORS lets only the listed origin read the answer.
// Prints one JSON object on stdout with what it saw; the pytest side makes the assertions.
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2]);
const STEP_MS = config.stepTimeoutMs ?? 15000;
const base = config.base;

const browser = await chromium.launch({
  executablePath: config.executablePath ?? '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
});

const seen = {
  requests: [],
  websockets: [],
  framesReceived: [],
  framesSent: [],
  console: [],
  pageErrors: [],
  results: {},
  cors: {},
};

// The editors are CodeMirror 5 instances: read them through the instance on their wrapper.
async function editorText(page, selector) {
  return page.evaluate((sel) => {
    const element = document.querySelector(`${sel} .CodeMirror`);
    return element && element.CodeMirror ? element.CodeMirror.getValue() : null;
  }, selector);
}

// Types into an editor like a user pasting: focus it, select all, insert the text.
async function typeInto(page, selector, text) {
  await page.click(selector);
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(text);
}

async function run(page, query, expected) {
  await typeInto(page, '.graphiql-query-editor .CodeMirror', query);
  // GraphiQL parses the query 100 ms after the last edit (debounced) and decides HTTP or
  // WebSocket from that parse: wait for it, as a user's pause before clicking would.
  await page.waitForFunction(
    () => {
      const editor = document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror;
      const ast = editor.documentAST;
      return Boolean(ast && ast.loc && ast.loc.source.body === editor.getValue());
    },
    null,
    { timeout: STEP_MS },
  );
  await page.click('button.graphiql-execute-button');
  await page.waitForFunction(
    (needle) => {
      const element = document.querySelector('.result-window .CodeMirror');
      return element && element.CodeMirror && element.CodeMirror.getValue().includes(needle);
    },
    expected,
    { timeout: STEP_MS },
  );
  return JSON.parse(await editorText(page, '.result-window'));
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('request', (request) => seen.requests.push(request.url()));
  page.on('console', (message) => seen.console.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => seen.pageErrors.push(String(error)));
  page.on('websocket', (socket) => {
    seen.websockets.push(socket.url());
    socket.on('framereceived', (frame) => seen.framesReceived.push(frame.payload.toString()));
    socket.on('framesent', (frame) => seen.framesSent.push(frame.payload.toString()));
  });

  const response = await page.goto(`${base}/graphql`);
  seen.page = {
    status: response.status(),
    contentType: response.headers()['content-type'],
    csp: response.headers()['content-security-policy'],
  };
  await page.waitForSelector('.graphiql-query-editor .CodeMirror', { timeout: STEP_MS });

  seen.results.hello = await run(page, '{ hello }', 'Hello, world!');

  seen.results.countdown = await run(page, 'subscription { countdown(from: 3) }', '"countdown": 0');

  await page.getByRole('button', { name: 'Headers' }).click();
  // The variables and headers editors share the tools pane; the headers one is now visible.
  const headersEditor = '.graphiql-editor-tool .CodeMirror:visible';
  await page.waitForSelector(headersEditor, { timeout: STEP_MS });
  await typeInto(
    page,
    headersEditor,
    JSON.stringify({ Authorization: `Bearer ${config.token}` }),
  );
  seen.results.createNote = await run(
    page,
    'mutation { createNote(title: "from the browser") { id title createdBy } }',
    'createdBy',
  );
  await page.screenshot({ path: config.screenshot, fullPage: true });
  const sentBefore = seen.framesSent.length;
  seen.results.signedCountdown = await run(
    page,
    'subscription { countdown(from: 1) }',
    '"countdown": 0',
  );
  seen.signedFramesSent = seen.framesSent.slice(sentBefore);
  await context.close();

  // CORS: the same request from a page on a listed origin and from one on an unlisted origin.
  const corsContext = await browser.newContext();
  const other = await corsContext.newPage();
  for (const [label, origin] of [
    ['allowed', config.corsAllowed],
    ['denied', config.corsDenied],
  ]) {
    await other.goto(`${origin}/`);
    seen.cors[label] = await other.evaluate(
      async ({ url, token }) => {
        try {
          const answer = await fetch(url, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
            body: JSON.stringify({ query: '{ me { id } }' }),
          });
          return { status: answer.status, body: await answer.json() };
        } catch (error) {
          return { error: String(error) };
        }
      },
      { url: `${base}/graphql`, token: config.token },
    );
  }
  await corsContext.close();
} catch (error) {
  seen.failure = String(error && error.stack ? error.stack : error);
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(seen)}\n`);
