<?php
/**
 * arkbox roundcube: every site-specific value comes from the environment (ROUNDCUBE_*,
 * or ROUNDCUBE_*_FILE for secrets), so the image is the same for every appliance.
 */

function arkbox_env(string $name, string $default = ''): string
{
    $file = getenv($name . '_FILE');
    if ($file !== false && $file !== '') {
        return trim((string) file_get_contents($file));
    }
    $value = getenv($name);
    return ($value === false || $value === '') ? $default : $value;
}

$config = [];
$config['db_dsnw'] = sprintf(
    'pgsql://%s:%s@%s:%s/%s',
    rawurlencode(arkbox_env('ROUNDCUBE_DB_USER', 'roundcube')),
    rawurlencode(arkbox_env('ROUNDCUBE_DB_PASSWORD')),
    arkbox_env('ROUNDCUBE_DB_HOST', 'postgres'),
    arkbox_env('ROUNDCUBE_DB_PORT', '5432'),
    rawurlencode(arkbox_env('ROUNDCUBE_DB_NAME', 'roundcube'))
);
/**
 * The box's Dovecot and Postfix refuse a login before TLS: the defaults are STARTTLS
 * (tls://). A value in ROUNDCUBE_IMAP_HOST / ROUNDCUBE_SMTP_HOST is used as given:
 * Roundcube itself lets ROUNDCUBE_<OPTION> override any option, so write tls:// there
 * (config/default.yaml does). The box's own mail server is `mail` on a private bridge
 * the mail container shares with this one only; no certificate names it (the box's
 * carry public host names), so for it alone the name and chain are not checked. Any
 * other server is verified as usual.
 */
function arkbox_mail_server(string $name, string $default, ?array &$options): string
{
    $host = arkbox_env($name, $default);
    if (strpos($host, '://') === false) {
        $host = 'tls://' . $host;
    }
    $bare = preg_replace('#^[a-z]+://#', '', $host);
    if (preg_replace('#:[0-9]+$#', '', $bare) === 'mail') {
        $options = ['ssl' => ['verify_peer' => false, 'verify_peer_name' => false]];
    }
    return $host;
}

$imap_options = null;
$smtp_options = null;
$config['imap_host'] = arkbox_mail_server('ROUNDCUBE_IMAP_HOST', 'mail:143', $imap_options);
$config['smtp_host'] = arkbox_mail_server('ROUNDCUBE_SMTP_HOST', 'mail:587', $smtp_options);
$config['imap_conn_options'] = $imap_options;
$config['smtp_conn_options'] = $smtp_options;
$config['smtp_user'] = '%u';
$config['smtp_pass'] = '%p';
// Encrypts the IMAP password kept in the session: exactly 24 characters.
$config['des_key'] = arkbox_env('ROUNDCUBE_DES_KEY');
$config['product_name'] = arkbox_env('ROUNDCUBE_PRODUCT_NAME', 'Webmail');
$config['support_url'] = '';
$config['skin'] = 'elastic';
$config['plugins'] = [];
$config['enable_spellcheck'] = false;
$config['enable_installer'] = false;
$config['temp_dir'] = '/tmp/';
// Roundcube's logs (errors, logins, sent mail, sessions) into the container log: its
// log files are symlinks to /dev/stderr, the one stream php-cgi shares with the engine.
$config['log_driver'] = 'file';
$config['log_dir'] = '/usr/share/arkbox/roundcube-logs/';
$config['log_file_ext'] = '';
$config['log_logins'] = true;
// Behind the proxy, which terminates TLS.
$config['use_https'] = false;
$config['proxy_whitelist'] = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'];
