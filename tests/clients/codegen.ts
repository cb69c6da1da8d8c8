// graphql-codegen 7: typed documents from Portico's schema, its custom scalars mapped.
import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: "../../schema.graphql", // or the URL of a development server: introspection is on there
  documents: ["operations.graphql"],
  generates: {
    "generated/": {
      preset: "client",
      config: {
        enumsAsTypes: true,
        scalars: {
          DateTime: { input: "string", output: "string" }, // ISO 8601 with offset
          JSON: { input: "unknown", output: "unknown" },
          Upload: { input: "File | Blob", output: "never" }, // the multipart request spec
        },
      },
    },
  },
};
export default config;
