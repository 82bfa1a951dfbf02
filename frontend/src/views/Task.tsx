import { TaskDetailLoader } from "../components/TaskDetail";
import { useDocumentTitle } from "../hooks";

export function TaskView({ taskId }: { taskId: string }) {
  useDocumentTitle(`Task ${taskId.slice(0, 8)}`);
  return (
    <div className="page narrow">
      <TaskDetailLoader taskId={taskId} />
    </div>
  );
}
