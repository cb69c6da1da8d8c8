// urql 6 (@urql/core): a query, a mutation, and a subscription over graphql-ws.
import { Client, cacheExchange, fetchExchange, gql, subscriptionExchange } from "@urql/core";
import { createClient as createWsClient } from "graphql-ws";
import WebSocket from "ws"; // Node 20 has no global WebSocket
import { HTTP_URL, TOKEN, WS_URL, ensure, run, same, within } from "./check.mjs";

const ws = createWsClient({
  url: WS_URL,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${TOKEN}` },
});

const client = new Client({
  url: HTTP_URL,
  fetchOptions: () => ({ headers: { Authorization: `Bearer ${TOKEN}` } }),
  exchanges: [
    cacheExchange,
    fetchExchange,
    subscriptionExchange({
      forwardSubscription(request) {
        const input = { ...request, query: request.query || "" };
        return { subscribe: (sink) => ({ unsubscribe: ws.subscribe(input, sink) }) };
      },
    }),
  ],
});

const CREATE = gql`
  mutation Create($input: CreateAccountInput!) {
    createAccount(input: $input) { errors { code } account { id name } }
  }
`;
const ACCOUNTS = gql`
  query Accounts($search: String) {
    accounts(first: 5, search: $search) { totalCount edges { node { id name } } }
  }
`;
const SYNCED = gql`
  subscription Synced {
    messageSynced { id subject accounts { name } }
  }
`;

run(async () => {
  const name = `urql ${Date.now()}`;
  const created = await client.mutation(CREATE, { input: { name, type: "INDIVIDUAL" } }).toPromise();
  ensure(!created.error, `mutation failed: ${created.error}`);
  same(created.data.createAccount.errors, [], "createAccount errors");

  const found = await client.query(ACCOUNTS, { search: name }).toPromise();
  ensure(!found.error, `query failed: ${found.error}`);
  same(found.data.accounts.totalCount, 1, "accounts found by name");
  same(found.data.accounts.edges[0].node.name, name, "found name");

  // The test makes new mail arrive until the script ends; the first event is enough.
  const event = await within(
    60,
    new Promise((resolve, reject) => {
      const { unsubscribe } = client.subscription(SYNCED, {}).subscribe((result) => {
        unsubscribe();
        result.error ? reject(result.error) : resolve(result.data.messageSynced);
      });
    }),
    "messageSynced event",
  );
  console.log(`EVENT ${JSON.stringify(event)}`);
  await ws.dispose();
  console.log("urql: ok");
});
