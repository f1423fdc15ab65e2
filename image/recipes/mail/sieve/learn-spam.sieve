# arkbox mail: a message moved or copied into Junk teaches rspamd spam.
require ["vnd.dovecot.pipe", "copy", "imapsieve"];
pipe :copy "learn" ["spam"];
