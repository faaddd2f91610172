# One image for every service: the API, the workers and Flower differ only in their command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TORCH_HOME=/models/torch
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN useradd --create-home --uid 1000 app && mkdir -p /models/torch /models/openvino && chown -R app /models /app
USER app
EXPOSE 8000 5555
CMD ["python", "-m", "api.serve"]
