# arkbox mail: which configuration the supervisor and mail-reload use (sourced).
# The appliance mounts its rendered configuration at /etc/arkbox-mail (postfix/,
# dovecot/, opendkim/); without it the image's own defaults are used (image tests).
ARKBOX_MAIL=/etc/arkbox-mail
SIEVE_DIR=/run/mail/sieve
# Spam filtering (rspamd and its Redis) runs unless the appliance's configuration turns
# it off (mail.spam.enabled: false renders no rspamd/ directory).
SPAM_FILTER=true
if [[ -f $ARKBOX_MAIL/postfix/main.cf ]]; then
    [[ -f $ARKBOX_MAIL/rspamd/actions.conf ]] || SPAM_FILTER=false
    # Postfix's meta files (postfix-files, dynamicmaps.cf) stay in /etc/postfix.
    export MAIL_CONFIG=$ARKBOX_MAIL/postfix
    DOVECOT_ARGS=(-c "$ARKBOX_MAIL/dovecot/dovecot.conf")
    OPENDKIM_CONFIG=$ARKBOX_MAIL/opendkim/opendkim.conf
else
    DOVECOT_ARGS=()
    OPENDKIM_CONFIG=/etc/opendkim.conf
fi
