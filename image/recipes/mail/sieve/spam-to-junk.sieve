# arkbox mail: at delivery, what rspamd marked as spam goes to Junk.
require ["fileinto"];
if header :is "X-Spam" "Yes" {
  fileinto "Junk";
  stop;
}
