// Compiles only if the generated types say what Portico answers (tsc --noEmit).
import type { RecentAccountsQuery } from "./generated/graphql";

type Exactly<A, B> =
  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Node = RecentAccountsQuery["accounts"]["edges"][number]["node"];

export const dateTimeIsAString: Exactly<Node["archivedAt"], string | null> = true;
export const typeIsAnEnum: Exactly<Node["type"], "COMPANY" | "FAMILY" | "INDIVIDUAL"> = true;
