import { Link, useLocation } from "../router";

export function NotFoundView() {
  const [path] = useLocation();
  return (
    <div className="page">
      <h1>Nothing here</h1>
      <p className="muted">
        There is no view at <code className="mono">{path}</code>. <Link to="/">Back to the overview</Link>
      </p>
    </div>
  );
}
