// graphql-request 7: a query and a mutation with a bearer token.
import { GraphQLClient, gql } from "graphql-request";
import { HTTP_URL, TOKEN, ensure, run, same } from "./check.mjs";

const client = new GraphQLClient(HTTP_URL, {
  headers: { Authorization: `Bearer ${TOKEN}` },
});

const CREATE = gql`
  mutation Create($input: CreateAccountInput!) {
    createAccount(input: $input) {
      errors { code message }
      account { id name type }
    }
  }
`;
const ACCOUNT = gql`
  query Account($id: ID!) {
    account(id: $id) { id name }
  }
`;

run(async () => {
  const name = `graphql-request ${Date.now()}`;
  const { createAccount } = await client.request(CREATE, { input: { name, type: "COMPANY" } });
  same(createAccount.errors, [], "createAccount errors");
  same(createAccount.account.name, name, "created name");
  ensure(createAccount.account.type === "COMPANY", "created type");

  const { account } = await client.request(ACCOUNT, { id: createAccount.account.id });
  same(account, { id: createAccount.account.id, name }, "account read back");
  console.log("graphql-request: ok");
});
