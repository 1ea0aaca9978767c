# What a lent GPU machine lacks, shared by gpu-check.mk and gpu-claims.mk: its python3 has torch and
# torchvision but not simplejpeg, and alexctl is not installed there (it runs from this tree). Include after
# ROOT and PY are set; gives PYPATH (for PYTHONPATH) and SITE_READY (an order-only prerequisite of the first
# alexctl command).
SITE ?= /tmp/alexctl-site

# simplejpeg from the wheel in .whl/ (installed once into SITE) when PY has none; nothing imports webdataset.
ifeq ($(shell $(PY) -c 'import simplejpeg' 2>/dev/null || echo missing),missing)
PYPATH     := $(ROOT):$(SITE)
SITE_READY := $(SITE)/.installed
else
PYPATH     := $(ROOT)
SITE_READY :=
endif

$(SITE)/.installed:
	@ls $(ROOT)/.whl/simplejpeg-*.whl > /dev/null 2>&1 || { echo "alexctl: $(PY) has no simplejpeg and .whl/ holds \
	no simplejpeg wheel: run pipelines/gpu-prepare.sh before the lease (or pip install simplejpeg)." >&2; exit 2; }
	$(PY) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $(SITE) \
		$(ROOT)/.whl/*.whl
	touch $@
