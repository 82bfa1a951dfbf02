// A tiny history router: the app has six routes, so a dependency is not worth it. Paths are relative to
// the mount root (MOUNT), so deep links work standalone and under a prefix.
import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useState,
  type AnchorHTMLAttributes,
  type MouseEvent,
  type ReactNode,
} from "react";
import { MOUNT } from "./api/base";

export interface Location {
  path: string; // relative to MOUNT, always starting with "/"
  search: URLSearchParams;
}

function current(): Location {
  let path = window.location.pathname;
  if (MOUNT && path.startsWith(MOUNT)) path = path.slice(MOUNT.length);
  if (!path.startsWith("/")) path = `/${path}`;
  return { path, search: new URLSearchParams(window.location.search) };
}

interface RouterValue {
  loc: Location;
  navigate: (to: string, opts?: { replace?: boolean }) => void;
}

const RouterContext = createContext<RouterValue | null>(null);

export function href(to: string): string {
  return `${MOUNT}${to.startsWith("/") ? to : `/${to}`}`;
}

export function RouterProvider({ children }: { children: ReactNode }) {
  const [loc, setLoc] = useState<Location>(current);
  useEffect(() => {
    const onPop = () => setLoc(current());
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);
  const navigate = useCallback((to: string, opts?: { replace?: boolean }) => {
    const url = href(to);
    if (opts?.replace) window.history.replaceState(null, "", url);
    else window.history.pushState(null, "", url);
    setLoc(current());
  }, []);
  const value = useMemo(() => ({ loc, navigate }), [loc, navigate]);
  return <RouterContext.Provider value={value}>{children}</RouterContext.Provider>;
}

export function useRouter(): RouterValue {
  const v = useContext(RouterContext);
  if (!v) throw new Error("useRouter outside RouterProvider");
  return v;
}

type LinkProps = Omit<AnchorHTMLAttributes<HTMLAnchorElement>, "href"> & { to: string; replace?: boolean };

/** An ordinary anchor (middle-click, copy link, open in new tab all work) that navigates in-app. */
export function Link({ to, replace, onClick, ...rest }: LinkProps) {
  const { navigate } = useRouter();
  const onAnchorClick = (e: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(e);
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to, { replace });
  };
  return <a href={href(to)} onClick={onAnchorClick} {...rest} />;
}

/** Build "/path?k=v" from a path and query params, dropping empty values. */
export function withQuery(path: string, params: Record<string, string | null | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) p.set(k, v);
  const s = p.toString();
  return s ? `${path}?${s}` : path;
}
