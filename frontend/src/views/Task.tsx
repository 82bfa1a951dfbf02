import { useDocumentTitle } from "../hooks";
import { TaskDetailLoader } from "./TaskDetail";

export function TaskView({ taskId }: { taskId: string }) {
  useDocumentTitle(`Task ${taskId.slice(0, 8)}`);
  return (
    <div className="page narrow">
      <TaskDetailLoader taskId={taskId} />
    </div>
  );
}
