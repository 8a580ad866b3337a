# edgedeploy.mk: plan, build and push a CNN deployment from a firmware repository's Makefile.
#
#   include edgedeploy.mk            # written by `edgedeploy init`
#   make edgedeploy-push TARGET=jetson
#
# Override any variable on the command line or before the include.
# Including this file never changes the including Makefile's default goal, and defines only
# edgedeploy-* targets: a firmware repo's own `build:` or `push:` stays its own.
_EDGEDEPLOY_GOAL := $(.DEFAULT_GOAL)
_EDGEDEPLOY_INCLUDED := $(filter-out $(lastword $(MAKEFILE_LIST)),$(firstword $(MAKEFILE_LIST)))

EDGEDEPLOY ?= edgedeploy
MANIFEST ?= edgedeploy.yaml
TARGET ?= local
BUILD_DIR ?= build/edgedeploy/$(TARGET)
EDGEDEPLOY_FLAGS ?=
# Under CI (CI set, as CI services do) a push deploys only the committed lockfile: a stale one
# fails (exit 7) instead of being re-planned and rewritten on the CI machine.
EDGEDEPLOY_PUSH_FLAGS ?= $(if $(CI),--locked,)

.PHONY: edgedeploy-plan edgedeploy-check edgedeploy-build edgedeploy-push edgedeploy-status \
	edgedeploy-logs edgedeploy-rollback

edgedeploy-plan:  ## plan (or re-plan) the deployment for TARGET; writes the plan lockfile
	$(EDGEDEPLOY) $(EDGEDEPLOY_FLAGS) plan "$(MANIFEST)" --target "$(TARGET)"

edgedeploy-check:  ## fail when the committed plan lockfile is stale (for CI)
	$(EDGEDEPLOY) $(EDGEDEPLOY_FLAGS) plan "$(MANIFEST)" --target "$(TARGET)" --check

edgedeploy-build:  ## build the runner bundle for TARGET into BUILD_DIR
	$(EDGEDEPLOY) $(EDGEDEPLOY_FLAGS) build "$(MANIFEST)" --target "$(TARGET)" -o "$(BUILD_DIR)"

edgedeploy-push:  ## build, upload, switch and health-check the release on TARGET
	$(EDGEDEPLOY) $(EDGEDEPLOY_FLAGS) push -m "$(MANIFEST)" --target "$(TARGET)" $(EDGEDEPLOY_PUSH_FLAGS)

edgedeploy-status:  ## what runs on TARGET: release, health, throughput
	$(EDGEDEPLOY) $(EDGEDEPLOY_FLAGS) status -m "$(MANIFEST)" --target "$(TARGET)"

edgedeploy-logs:  ## the runner's log on TARGET
	$(EDGEDEPLOY) $(EDGEDEPLOY_FLAGS) logs -m "$(MANIFEST)" --target "$(TARGET)"

edgedeploy-rollback:  ## restore the previous release on TARGET
	$(EDGEDEPLOY) $(EDGEDEPLOY_FLAGS) rollback -m "$(MANIFEST)" --target "$(TARGET)"

# Short aliases plan/build/push/status, only when this file is the makefile itself
# (`make -f edgedeploy.mk push`). An including Makefile gets them with EDGEDEPLOY_ALIASES = 1
# before the include, and only if it has no target of these names: make would merge the
# prerequisites, so its own `make build` would run `edgedeploy build` first.
EDGEDEPLOY_ALIASES ?= $(if $(_EDGEDEPLOY_INCLUDED),0,1)
ifeq ($(EDGEDEPLOY_ALIASES),1)
plan: edgedeploy-plan
build: edgedeploy-build
push: edgedeploy-push
status: edgedeploy-status
.PHONY: plan build push status
endif

.DEFAULT_GOAL := $(_EDGEDEPLOY_GOAL)
