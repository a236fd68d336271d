import type { ReactNode } from "react";

export const metadata = { title: "Demo app (Better Auth)" };

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body style={{ fontFamily: "system-ui", maxWidth: 520, margin: "4rem auto" }}>{children}</body>
    </html>
  );
}
