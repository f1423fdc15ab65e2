# arkbox: an idle interactive shell logs itself out after 15 minutes, so a forgotten root
# shell on a laptop does not stay open on the server. Read-only so it cannot be unset.
case $- in
    *i*)
        if [ "${TMOUT:-}" != "900" ]; then
            readonly TMOUT=900
            export TMOUT
        fi
        ;;
esac
