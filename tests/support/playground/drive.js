// Drives the documented Teams walkthrough in Microsoft 365 Agents Playground (see docs/teams.md).
//
// Run by tests/support/playground/netns.py inside a loopback-only network namespace, with jitpass
// and the Playground already listening. Megan Bowen is the Playground's current user
// (.m365agentsplayground.yml), so her Approve is a real click in the Playground's web UI (headless
// Chromium through playwright-core). Alex Wilber asks, through the Playground's own "custom activity"
// feature (POST /_internal/v1/customActivities), in the 1:1 chat the Playground keeps for him.
//
// It only acts and records: every step's observation goes into the transcript printed as one JSON
// object on stdout; tests/e2e/test_playground.py asserts on it. A step that does not happen within
// its time bound ends the run with the transcript so far and `failed` saying which step.
"use strict";

const { chromium } = require("playwright-core");

const PLAYGROUND = process.env.PLAYGROUND_URL;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const STEP_MS = Number(process.env.STEP_TIMEOUT_MS || 15000);
const TENANT = "00000000-0000-0000-0000-0000000000001";
const BOT = { id: "00000000-0000-0000-0000-00000000000011", name: "jitpass" };
const ALEX = { id: "user-id-0", name: "Alex Wilber", aadObjectId: "00000000-0000-0000-0000-0000000000020" };
const LEADS = "channel-announcements-id";
const TEAM = { id: "team-id", name: "My Team", aadGroupId: "00000000-0000-0000-0000-000000000031" };

const transcript = { steps: {}, frames: 0, failed: null };
const messages = new Map(); // messageId -> {conversationId, message} (latest content)
const logs = []; // the Playground's log items: every activity with its HTTP answer
const waiters = [];

function note(step, value) {
  transcript.steps[step] = value;
}

// What the bot sent, from the Playground's log stream: every call the bot made to the Playground's
// connector, with its body and answer (the conversation stream only covers the UI user's chats).
function onFrame(payload) {
  let frame;
  try {
    frame = JSON.parse(String(payload));
  } catch {
    return;
  }
  transcript.frames += 1;
  const log = frame.logAction === "appendLog" ? frame.log : null;
  if (log) {
    logs.push(log);
    const body = log.request && log.request.body;
    const ok = log.response && log.response.statusCode < 300;
    if (log.from === "User Application" && ok && body && body.type === "message" && log.messageId) {
      const known = messages.get(log.messageId);
      messages.set(log.messageId, {
        conversationId: (log.conversationId || "").split(";")[0],
        updates: known ? known.updates + 1 : 0,
        message: body,
      });
    }
  }
  for (const waiter of [...waiters]) waiter();
}

function waitFor(step, find) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const found = find();
      if (found) {
        clearTimeout(timer);
        waiters.splice(waiters.indexOf(check), 1);
        resolve(found);
      }
    };
    const timer = setTimeout(() => {
      waiters.splice(waiters.indexOf(check), 1);
      reject(new Error(`step "${step}": nothing within ${STEP_MS} ms`));
    }, STEP_MS);
    waiters.push(check);
    check();
  });
}

const cardsOf = (entry) => (entry.message.attachments || [])
  .filter((a) => a.contentType === "application/vnd.microsoft.card.adaptive").map((a) => a.content);
const dump = (value) => JSON.stringify(value);

function botMessage(conversationId, matches, { after = new Set() } = {}) {
  for (const [id, entry] of messages) {
    if (after.has(id) || entry.conversationId !== conversationId) continue;
    if (matches(entry)) return { id, ...entry };
  }
  return null;
}

function invokeAnswer(activityId) {
  const item = logs.find((log) => log.messageId === activityId && log.activityName === "invoke" && log.response);
  return item ? item.response : null;
}

async function call(method, path, body) {
  const response = await fetch(PLAYGROUND + path, {
    method, headers: { "Content-Type": "application/json" }, body: body === undefined ? undefined : dump(body),
  });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  if (response.status >= 400) throw new Error(`${method} ${path}: ${response.status} ${text.slice(0, 300)}`);
  return json;
}

let counter = 0;

// An activity from Alex, sent through the Playground's custom-activity feature.
async function asAlex(conversation, fields) {
  counter += 1;
  const activity = {
    id: `alex-${counter}-${Date.now()}`, timestamp: new Date().toISOString(), channelId: "msteams",
    serviceUrl: `${PLAYGROUND}/_connector`, recipient: BOT, from: ALEX, conversation, locale: "en-US",
    channelData: { tenant: { id: TENANT } }, ...fields,
  };
  if (conversation.conversationType === "channel") {
    activity.channelData = { ...activity.channelData, team: TEAM, channel: { id: conversation.id } };
  }
  await call("POST", "/_internal/v1/customActivities", activity);
  return activity.id;
}

const cardAction = (verb, requestId) => ({
  type: "invoke", name: "adaptiveCard/action",
  value: { action: { type: "Action.Execute", verb, data: { request_id: requestId } }, trigger: "manual" },
});

async function main() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.setDefaultTimeout(STEP_MS);
    page.on("websocket", (ws) => ws.on("framereceived", (frame) => onFrame(frame.payload)));
    await page.goto(`${PLAYGROUND}/`);

    // 1. Greeting: the UI installs the app for its user (Megan); jitpass answers with its command card.
    const greeting = await waitFor("greeting", () => botMessage("personal-chat-megan",
      (e) => cardsOf(e).some((c) => dump(c).includes("just-in-time access"))));
    note("greeting", { text: dump(cardsOf(greeting)) });

    // Megan @mentions the bot in My Team > General, typed through the Playground's own message API.
    const mention = "<at>jitpass</at>";
    await call("POST", "/_conversation/v1/conversations/team-id/messages", {
      from: { id: "user-id-1" }, text: `${mention} whereami`, textFormat: "plain",
      mentions: [{ mentioned: { id: BOT.id, name: BOT.name }, text: mention }],
    });
    const whereami = await waitFor("mention", () => botMessage("team-id", (e) => (e.message.text || "").includes("conversation is")));
    // The Playground logs the activity it sent once the bot has answered it.
    const mentioned = await waitFor("mention sent", () => logs.find((log) => log.from === "Microsoft 365 Agents Playground"
      && log.activityName === "message" && (log.conversationId || "").startsWith("team-id") && log.response));
    note("mention", { text: whereami.message.text, entities: mentioned.request.body.entities,
      status: mentioned.response.statusCode });

    // Alex's 1:1 chat with the bot, as Teams opens one (the connector's create-conversation call).
    const chat = await call("POST", "/_connector/v3/conversations",
      { isGroup: false, members: [{ id: ALEX.id }], tenantId: TENANT });
    const alexChat = { id: chat.id, conversationType: "personal", tenantId: TENANT };
    note("alex_chat", chat.id);

    // 2. Alex: `list`.
    await asAlex(alexChat, { type: "message", text: "list", textFormat: "plain" });
    const list = await waitFor("list", () => botMessage(chat.id, (e) => dump(cardsOf(e)).includes("Catalogue")));
    note("list", { text: dump(cardsOf(list)) });

    // 3. Alex: the request.
    await asAlex(alexChat, { type: "message", text: "access demo-zendesk try the demo for 30m", textFormat: "plain" });
    const waiting = await waitFor("request", () => botMessage(chat.id, (e) => (e.message.text || "").includes("waiting")));
    const requestId = (waiting.message.text.match(/R-[0-9A-Z]{8}/) || [""])[0];
    note("request", { text: waiting.message.text, request_id: requestId });

    // 4. The approval card in My Team > Announcements.
    const card = await waitFor("approval card", () => botMessage(LEADS, (e) => dump(cardsOf(e)).includes(requestId)));
    note("approval_card", { message_id: card.id, text: dump(cardsOf(card)) });

    // 5. Alex presses Approve on his own request: refused.
    const selfApprove = await asAlex({ id: LEADS, isGroup: true, conversationType: "channel", tenantId: TENANT },
      { ...cardAction("approve", requestId), replyToId: card.id });
    const refused = await waitFor("self approval", () => invokeAnswer(selfApprove));
    note("self_approval", refused);

    // 6. Megan opens Announcements in the web UI and clicks Approve on the card.
    await page.getByText("Announcements", { exact: true }).first().click();
    const cardInUi = page.locator(".ac-adaptiveCard", { hasText: requestId }).first();
    await cardInUi.waitFor();
    const uiBefore = await cardInUi.innerText();
    await cardInUi.getByRole("button", { name: "Approve" }).click();
    const approvedInUi = page.locator(".ac-adaptiveCard", { hasText: requestId })
      .filter({ hasText: "Approved by Megan Bowen" }).first();
    await approvedInUi.waitFor();
    const uiAfter = await approvedInUi.innerText();
    const uiInvoke = await waitFor("ui approval", () => logs.find((log) => log.activityName === "invoke"
      && log.conversationId && log.conversationId.startsWith(LEADS) && log.request
      && dump(log.request.body).includes('"verb":"approve"') && dump(log.request.body).includes("user-id-1")
      && log.response));
    note("ui_approval", { before: uiBefore, after: uiAfter, invoke_from: uiInvoke.request.body.from,
      status: uiInvoke.response.statusCode, answer: dump(uiInvoke.response.body) });

    // 7. The delivery card in Alex's 1:1 chat: username, password, current code.
    const delivery = await waitFor("delivery", () => botMessage(chat.id,
      (e) => cardsOf(e).some((c) => dump(c).includes("New code"))));
    note("delivery", { message_id: delivery.id, card: cardsOf(delivery)[0] });

    // 8. Alex presses New code.
    const newCode = await asAlex(alexChat, { ...cardAction("newCode", requestId), replyToId: delivery.id });
    note("new_code", await waitFor("new code", () => invokeAnswer(newCode)));

    // 9. Alex presses Done: the delivery card is replaced (in place, through the connector).
    const done = await asAlex(alexChat, { ...cardAction("done", requestId), replyToId: delivery.id });
    note("done", await waitFor("done", () => invokeAnswer(done)));
    const replaced = await waitFor("delivery replaced", () => {
      const entry = messages.get(delivery.id);
      return entry && entry.updates > 0 && !dump(cardsOf(entry)).includes("New code") ? entry : null;
    });
    note("delivery_replaced", { text: dump(cardsOf(replaced)) });

    // 10. The leads' card shows the final state, in the Playground's store and in the UI.
    const final = await waitFor("leads card final", () => {
      const entry = messages.get(card.id);
      return entry && /ended|revoked|Ended/.test(dump(cardsOf(entry))) ? entry : null;
    });
    const endedInUi = page.locator(".ac-adaptiveCard", { hasText: requestId }).filter({ hasText: /Ended early/ }).first();
    await endedInUi.waitFor();
    note("leads_final", { text: dump(cardsOf(final)), ui: await endedInUi.innerText() });
    if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
    note("announcements_all", [...messages.values()].filter((e) => e.conversationId.startsWith(LEADS))
      .map((e) => dump(e.message)));
  } finally {
    transcript.http = logs.filter((log) => log.response).map((log) => ({
      activity: log.activityName, conversation: log.conversationId || "", from: log.from,
      status: log.response.statusCode,
    }));
    await browser.close();
  }
}

main()
  .catch((error) => {
    transcript.failed = String(error && error.message ? error.message : error);
  })
  .finally(() => {
    process.stdout.write(JSON.stringify(transcript) + "\n");
    process.exit(transcript.failed ? 1 : 0);
  });
