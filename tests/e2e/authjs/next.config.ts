import type { NextConfig } from "next";

const config: NextConfig = {
  reactStrictMode: true,
  poweredByHeader: false,
  // This folder is the app's root (the folder above holds another app and its lock file).
  turbopack: { root: __dirname },
  outputFileTracingRoot: __dirname,
};

export default config;
