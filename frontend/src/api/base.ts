// Where the SPA is mounted: the server rewrites `<base href>` to the mount root, so every URL the app
// builds (routes, API, WebSocket) is derived from document.baseURI and works under any prefix.
const basePath = new URL(document.baseURI).pathname.replace(/\/+$/, "");

/** The mount root without trailing slash: "" standalone, "/prefix" when mounted. */
export const MOUNT = basePath;
export const API = `${basePath}/api`;

export function wsUrl(path: string): string {
  const u = new URL(document.baseURI);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.pathname = `${basePath}/api${path}`;
  u.search = "";
  u.hash = "";
  return u.toString();
}
