# celery-flow server image: builds the UI, installs the package, runs `celery-flow server`.
# Usage: docker build -t celery-flow . && docker run -p 8000:8000 \
#          -e CELERY_FLOW_BROKER_URL=redis://redis:6379/0 -v celery-flow-data:/data celery-flow
FROM node:20-bookworm-slim AS ui
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
# The Vite config writes to ../src/celery_flow/web/static.
RUN mkdir -p ../src/celery_flow/web/static && npm run build

FROM python:3.12-slim-bookworm AS wheel
WORKDIR /src
RUN pip install --no-cache-dir build
COPY pyproject.toml hatch_build.py README.md ./
COPY src/ src/
COPY --from=ui /src/src/celery_flow/web/static/ src/celery_flow/web/static/
RUN python -m build --wheel --outdir /dist

FROM python:3.12-slim-bookworm
COPY --from=wheel /dist/*.whl /tmp/
RUN pip install --no-cache-dir "$(ls /tmp/*.whl)[postgres,fast,mcp,sqs]" && rm /tmp/*.whl \
    && useradd --create-home --uid 1000 flow && mkdir /data && chown flow /data
USER flow
ENV CELERY_FLOW_STORE=sqlite:////data/celery-flow.db
EXPOSE 8000
CMD ["celery-flow", "server", "--host", "0.0.0.0", "--port", "8000"]
