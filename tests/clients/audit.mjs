// graphql-http's audits of the GraphQL-over-HTTP spec: every MUST passes; SHOULDs are listed.
import { serverAudits } from "graphql-http";
import { HTTP_URL, fail, run } from "./check.mjs";

run(async () => {
  const results = await Promise.all(
    serverAudits({ url: HTTP_URL }).map(async (audit) => ({ ...audit, result: await audit.fn() })),
  );
  const must = [];
  for (const { name, result } of results) {
    if (result.status === "ok") continue;
    const line = `${result.status} ${name}: ${result.reason}`;
    if (name.startsWith("MUST")) must.push(line);
    else console.log(line); // a SHOULD or MAY: worth knowing, not a failure
  }
  const passed = results.filter(({ result }) => result.status === "ok").length;
  console.log(`audit: ${passed} of ${results.length} passed`);
  if (must.length) fail(`MUST audits failed:\n${must.join("\n")}`);
});
