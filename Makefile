# `make` runs what CI runs. See CONTRIBUTING.md.
.PHONY: check fmt test demo bench

check:
	.ci/run

fmt:
	cargo fmt --all

test:
	tests/run

demo:
	cargo run --release -- demo

bench:
	cargo run --release -- bench
