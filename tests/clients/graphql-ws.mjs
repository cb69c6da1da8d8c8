// graphql-ws 6 straight: the token in connectionParams; a bad token closes with 4403.
import { createClient } from "graphql-ws";
import WebSocket from "ws"; // Node 20 has no global WebSocket
import { TOKEN, WS_URL, run, same, within } from "./check.mjs";

function connect(token) {
  return createClient({
    url: WS_URL,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${token}` },
    retryAttempts: 0, // graphql-ws retries after 4403 by default; this check wants the close
  });
}

run(async () => {
  // Signed in: a query over the socket answers as over HTTP.
  const client = connect(TOKEN);
  const query = client.iterate({ query: "{ viewer { __typename } }" });
  const { value } = await within(10, query.next(), "answer");
  same(value, { data: { viewer: { __typename: "StaffMember" } } }, "query over graphql-ws");
  await client.dispose();

  // A token naming no session: the server closes 4403 before acknowledging.
  const refused = connect("not-a-session");
  const closed = new Promise((resolve) => refused.on("closed", (event) => resolve(event)));
  const attempt = refused.iterate({ query: "{ viewer { __typename } }" }).next().catch((e) => e);
  const event = await within(10, closed, "close");
  same(event.code, 4403, "close code for a bad token");
  await attempt;
  await refused.dispose();
  console.log("graphql-ws: ok");
});
