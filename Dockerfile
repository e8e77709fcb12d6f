# The CDS Hooks service: `cdsrules serve` (gunicorn, gthread workers) on port 8080, as a non-root user.
#
#   docker build -t cdsrules .
#   docker run -p 8080:8080 -e CDSRULES_DB_URL=postgresql+psycopg://... -v ./auth:/config:ro cdsrules
#
# durable-rules 2.0.28 ships no wheels: its C core is compiled in the build stage, which alone has gcc. Python 3.12
# is the newest it imports on (3.13 removed PyEval_CallObject). The build stage makes wheels of the project and of
# every dependency at the versions in requirements.lock; the image installs those wheels (schemas and migrations
# travel inside the package) and keeps only rules/, the released rule set it serves.

FROM python:3.12-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY cdsrules cdsrules
COPY engine engine
COPY schemas schemas
COPY store store
COPY webhook webhook
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c requirements.lock .

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/cdsrules-metrics \
    CDSRULES_RULES=/app/rules \
    CDSRULES_DB_URL=sqlite:////app/var/cdsrules.db \
    CDSRULES_WORKERS=4 \
    CDSRULES_AUTH="--auth-config /config/auth.yaml"
# Pango renders the release dossier's PDF (weasyprint).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin cdsrules
WORKDIR /app
COPY --from=build /wheels /wheels
COPY rules rules
RUN pip install --no-cache-dir --no-index --find-links /wheels cdsrules \
 && rm -rf /wheels \
 && mkdir -p /app/var "$PROMETHEUS_MULTIPROC_DIR" \
 && chown -R cdsrules:cdsrules /app/var /app/rules "$PROMETHEUS_MULTIPROC_DIR"
USER cdsrules
EXPOSE 8080
# /readyz: rulesets loaded and the store answers (no token needed). No curl in slim images: Python asks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
# Production passes --auth-config (the default above: mount the file and its JWKS at /config); a development
# machine may set CDSRULES_AUTH=--no-auth. The shell form lets the variables be set per deployment.
CMD ["sh", "-c", "exec cdsrules serve --host 0.0.0.0 --port 8080 --rules \"$CDSRULES_RULES\" --db \"$CDSRULES_DB_URL\" --workers \"$CDSRULES_WORKERS\" $CDSRULES_AUTH"]
