# Operator verbs for the marketplace containers. `make help` lists them.
#
#   make image                 build marketplace:latest (IMAGE=... TAG=... to change)
#   make up / make down        the local stack (docker-compose.yml)
#   make secrets deploy        the swarm stack (stack.yml), on a manager node
#   make cluster-up / cluster-down / deploy-cluster
#                              the same on a three-node RabbitMQ cluster with quorum
#                              queues (docker-compose.cluster.yml, stack.cluster.yml)
#   make deploy-test           all of it, for real, on a throwaway local engine

SHELL := /bin/bash
.DEFAULT_GOAL := help

TAG      ?= latest
IMAGE    ?= marketplace:$(TAG)
STACK    ?= marketplace
COMPOSE  ?= docker compose
CLUSTER_COMPOSE := $(COMPOSE) -f docker-compose.yml -f docker-compose.cluster.yml --profile cluster

# stack.yml and docker-compose.yml read the image from MARKETPLACE_IMAGE.
export MARKETPLACE_IMAGE := $(IMAGE)

.PHONY: help image push up down cluster-up cluster-down deploy deploy-cluster remove ps scale logs-api \
	logs-worker secrets validate engine engine-stop image-local deploy-test

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

image: ## build the image (IMAGE, default marketplace:latest)
	docker build -t $(IMAGE) .

push: ## push IMAGE to its registry (multi-node swarms pull it from there)
	docker push $(IMAGE)

up: ## start the local stack: PostgreSQL, RabbitMQ, api on :8080, worker
	$(COMPOSE) up -d --build --wait

down: ## stop the local stack (data kept; `docker compose down -v` wipes it)
	$(COMPOSE) down

cluster-up: ## the local stack on three clustered RabbitMQ nodes, quorum queues
	$(CLUSTER_COMPOSE) up -d --build --wait

cluster-down: ## stop it (data kept)
	$(CLUSTER_COMPOSE) down

deploy: ## deploy or update the swarm stack STACK with IMAGE
	docker stack deploy --with-registry-auth -c stack.yml $(STACK)

deploy-cluster: ## the same, RabbitMQ as a three-node cluster (nodes labelled marketplace.rabbitmq=1..3)
	docker stack deploy --with-registry-auth -c stack.yml -c stack.cluster.yml $(STACK)

remove: ## remove the swarm stack (volumes and secrets are kept)
	docker stack rm $(STACK)

ps: ## services of the swarm stack and their replicas
	docker stack services $(STACK)

scale: ## scale a service: make scale SERVICE=api REPLICAS=4
	@test -n "$(SERVICE)" -a -n "$(REPLICAS)" || { echo "usage: make scale SERVICE=api|worker REPLICAS=N"; exit 2; }
	docker service scale $(STACK)_$(SERVICE)=$(REPLICAS)

logs-api: ## follow the logs of every api task
	docker service logs -f $(STACK)_api

logs-worker: ## follow the logs of every worker task
	docker service logs -f $(STACK)_worker

secrets: ## create the swarm secrets (POSTGRES_PASSWORD, RABBITMQ_PASSWORD or prompts)
	bash deploy/create-secrets.sh

validate: ## check the compose/stack files, their variables and the entrypoint (no Docker needed)
	bash deploy/validate.sh

engine: ## start a throwaway Docker engine here (no registry, no iptables); prints DOCKER_HOST
	bash deploy/local-engine.sh start

engine-stop: ## stop that engine and remove everything it made
	bash deploy/local-engine.sh stop

image-local: ## build marketplace:local and the PostgreSQL/RabbitMQ/proxy images without a registry
	bash deploy/build-local-images.sh all

deploy-test: ## engine, images, compose, RabbitMQ cluster, swarm stack, rolling update, rollback, scaling; then teardown
	bash deploy/ci-deploy-test.sh
