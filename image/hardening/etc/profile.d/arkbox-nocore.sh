# arkbox: no core dumps from interactive shells either, including those whose session did
# not pass through pam_limits (Debian's `su` does not load it). See limits.d/90-arkbox-nocore.conf.
ulimit -c 0 2>/dev/null || true
