// Apollo Client 4: sign in, automatic persisted queries (POST and GET), the normalised
// cache, a mutation, and a subscription over graphql-ws.
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition } from "@apollo/client/utilities";
import { createHash } from "node:crypto";
import { createClient } from "graphql-ws";
import WebSocket from "ws"; // Node 20 has no global WebSocket
import { HTTP_URL, WS_URL, ensure, run, same, within } from "./check.mjs";

const sha256 = (text) => createHash("sha256").update(text).digest("hex");

/** A client for Portico: HTTP with persisted queries, subscriptions over graphql-ws. */
function portico({ token, getForHashedQueries = false, fetch = globalThis.fetch }) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const http = new PersistedQueryLink({ sha256, useGETForHashedQueries: getForHashedQueries })
    .concat(new HttpLink({ uri: HTTP_URL, headers, fetch }));
  const sockets = createClient({
    url: WS_URL,
    webSocketImpl: WebSocket,
    connectionParams: token ? { Authorization: `Bearer ${token}` } : {},
  });
  const isSubscription = ({ query }) => {
    const definition = getMainDefinition(query);
    return definition.kind === "OperationDefinition" && definition.operation === "subscription";
  };
  const link = ApolloLink.split(isSubscription, new GraphQLWsLink(sockets), http);
  return { client: new ApolloClient({ link, cache: new InMemoryCache() }), sockets };
}

/** A fetch that keeps every request (method, query sent or not) and the answer's codes. */
function recorder() {
  const requests = [];
  const fetch = async (url, init = {}) => {
    const method = init.method ?? "GET";
    const sent = method === "GET" ? Object.fromEntries(new URL(url).searchParams) : JSON.parse(init.body);
    const response = await globalThis.fetch(url, init);
    const answer = await response.clone().json().catch(() => null);
    const codes = (answer?.errors ?? []).map((error) => error.extensions?.code);
    requests.push({ method, hasQuery: Boolean(sent.query), status: response.status, codes });
    return response;
  };
  return { requests, fetch };
}

const SIGN_IN = gql`
  mutation SignIn($firm: String!, $email: String!, $password: String!) {
    staffSignIn(firm: $firm, email: $email, password: $password) { errors { code } token }
  }
`;
const CREATE = gql`
  mutation Create($input: CreateAccountInput!) {
    createAccount(input: $input) { errors { code } account { id name } }
  }
`;
const RENAME = gql`
  mutation Rename($id: ID!, $name: String!) {
    updateAccount(id: $id, input: { name: $name }) { errors { code } account { id name } }
  }
`;
const SYNCED = gql`
  subscription Synced {
    messageSynced { id subject accounts { name } }
  }
`;
// A name of this run's own, so the server has never seen these documents (nor their hashes).
const stamp = Date.now();
const ACCOUNTS = gql(`query Accounts${stamp}($search: String) {
  accounts(first: 5, search: $search) { totalCount edges { node { id name } } }
}`);
const ACCOUNT = gql(`query Account${stamp}($id: ID!) { account(id: $id) { id name } }`);

const NOT_FOUND_THEN_FULL = (method) => [
  { method, hasQuery: false, status: 200, codes: ["PERSISTED_QUERY_NOT_FOUND"] },
  { method: "POST", hasQuery: true, status: 200, codes: [] },
];

run(async () => {
  const anonymous = portico({}).client;
  const { data: signIn } = await anonymous.mutate({
    mutation: SIGN_IN,
    variables: {
      firm: process.env.PORTICO_FIRM,
      email: process.env.PORTICO_EMAIL,
      password: process.env.PORTICO_PASSWORD,
    },
  });
  same(signIn.staffSignIn.errors, [], "staffSignIn errors");
  const token = signIn.staffSignIn.token;

  const first = recorder();
  const { client } = portico({ token, fetch: first.fetch });
  const name = `Apollo ${stamp}`;
  const { data: created } = await client.mutate({
    mutation: CREATE,
    variables: { input: { name, type: "FAMILY" } },
  });
  same(created.createAccount.errors, [], "createAccount errors");
  const id = created.createAccount.account.id;

  // Persisted queries over POST: an unknown hash, then hash and query, then the hash alone.
  first.requests.length = 0;
  const { data: listed } = await client.query({ query: ACCOUNTS, variables: { search: name } });
  same(listed.accounts.edges, [{ __typename: "AccountEdge", node: { __typename: "Account", id, name } }], "accounts");
  same(first.requests, NOT_FOUND_THEN_FULL("POST"), "requests of a new persisted query");

  const second = recorder();
  const { client: other, sockets } = portico({ token, fetch: second.fetch });
  const { data: again } = await other.query({ query: ACCOUNTS, variables: { search: name } });
  same(again, listed, "the answer to the hash alone");
  same(second.requests, [{ method: "POST", hasQuery: false, status: 200, codes: [] }], "requests of a known hash");

  // The normalised cache: the mutation's Account updates the cached list, no refetch.
  second.requests.length = 0;
  const renamed = `${name} renamed`;
  const { data: update } = await other.mutate({ mutation: RENAME, variables: { id, name: renamed } });
  same(update.updateAccount.errors, [], "updateAccount errors");
  const cached = other.readQuery({ query: ACCOUNTS, variables: { search: name } });
  same(cached.accounts.edges[0].node.name, renamed, "the cached list after the mutation");
  ensure(`Account:${id}` in other.cache.extract(), `no Account:${id} in the cache`);
  ensure(second.requests.every((request) => request.method === "POST"), "only the mutation went out");

  // Persisted queries over GET (cacheable by CDNs): the same dance, then GET alone.
  const third = recorder();
  const get = portico({ token, fetch: third.fetch, getForHashedQueries: true }).client;
  const { data: one } = await get.query({ query: ACCOUNT, variables: { id } });
  same(one.account.name, renamed, "account over GET");
  same(third.requests, NOT_FOUND_THEN_FULL("GET"), "requests of a new persisted GET query");
  const fourth = recorder();
  const getAgain = portico({ token, fetch: fourth.fetch, getForHashedQueries: true }).client;
  same((await getAgain.query({ query: ACCOUNT, variables: { id } })).data, one, "answer to GET hash");
  same(fourth.requests, [{ method: "GET", hasQuery: false, status: 200, codes: [] }], "requests of a known GET hash");

  // A subscription over graphql-ws: the test makes mail arrive until this script ends.
  const event = await within(
    60,
    new Promise((resolve, reject) => {
      const subscription = other.subscribe({ query: SYNCED }).subscribe({
        next: ({ data, error }) => {
          subscription.unsubscribe();
          error ? reject(error) : resolve(data.messageSynced);
        },
        error: reject,
      });
    }),
    "messageSynced event",
  );
  console.log(`EVENT ${JSON.stringify(event)}`);
  await sockets.dispose();
  console.log("apollo: ok");
});
