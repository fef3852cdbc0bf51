import { defineConfig } from "vite";

// `npm run dev` serves the terminal with hot reload and sends its API calls to a `redstore up`
// on the default port; `npm run build` is what build.rs runs for the binary to embed.
const server = process.env.REDSTORE_URL ?? "http://127.0.0.1:50051";

export default defineConfig({
  build: {
    // iPadOS 15 and later: Safari's module scripts, top-level await and BigInt.
    target: "safari15",
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
  server: {
    proxy: {
      "/redstore.": { target: server, changeOrigin: false },
      "/v1/": { target: server, changeOrigin: false },
    },
  },
});
