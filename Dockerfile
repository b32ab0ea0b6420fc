# One image for every service; docker-compose.yml and the Kubernetes manifests pick the module.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
RUN python scripts/gen_protos.py && useradd --uid 10001 --no-create-home app
USER 10001
CMD ["python", "-m", "gateway"]
