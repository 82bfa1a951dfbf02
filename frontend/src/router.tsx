// Routing is wouter's, under the mount root: paths in the app ("/flows/<id>") are relative to MOUNT, so
// deep links work standalone and under any prefix the server is mounted at.
import type { ReactNode } from "react";
import { Router, useLocation } from "wouter";
import { MOUNT } from "./api/base";

export { Link, Redirect, Route, Switch, useLocation, useSearchParams } from "wouter";

export function AppRouter({ children }: { children: ReactNode }) {
  return <Router base={MOUNT}>{children}</Router>;
}

/** navigate(to, { replace }) with `to` relative to the mount root; stable across renders. */
export function useNavigate(): ReturnType<typeof useLocation>[1] {
  return useLocation()[1];
}

/** Build "/path?k=v" from a path and query params, dropping empty values. */
export function withQuery(path: string, params: Record<string, string | null | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) p.set(k, v);
  const s = p.toString();
  return s ? `${path}?${s}` : path;
}

/** A route parameter as the user typed it: "a%2Fb" -> "a/b" (wouter leaves reserved escapes). */
export function param(value: string | undefined): string {
  if (value === undefined) return "";
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}
