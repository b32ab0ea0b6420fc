# One runtime image for every service; docker-compose.yml and deploy/k8s/ pick the module.
#
# The build stage installs requirements.lock (runtime dependencies only: no test, lint or type
# checking tools) into a virtualenv, generates the gRPC stubs and compiles the bytecode; the
# final stage copies only that virtualenv and the services' code onto a clean base.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /app
COPY requirements.lock ./
# --no-deps: the lock is the complete set, so nothing outside it gets in; pip check proves it is
# complete and consistent.
RUN pip install --no-deps -r requirements.lock && pip check
COPY protos/ protos/
COPY scripts/gen_protos.py scripts/
RUN python scripts/gen_protos.py
COPY config.json ./
COPY common/ common/
COPY gateway/ gateway/
COPY orchestrator/ orchestrator/
COPY section_worker/ section_worker/
COPY storage_svc/ storage_svc/
COPY simulator/ simulator/
# The Python client and the command line (`python -m wealthai_client`), for jobs run in the image.
COPY wealthai_client/ wealthai_client/
# Bytecode now, since the containers' root filesystem is read-only; then prove that every
# service's entry point imports with the runtime set alone.
RUN rm -rf protos scripts requirements.lock \
    && python -m compileall -q /app \
    && python -c "import gateway.__main__, orchestrator.__main__, section_worker.__main__, storage_svc.__main__, simulator.__main__, wealthai_client.cli"

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY deploy/entrypoint.sh /usr/local/bin/wealthai-entrypoint
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["wealthai-entrypoint"]
CMD ["python", "-m", "gateway"]
