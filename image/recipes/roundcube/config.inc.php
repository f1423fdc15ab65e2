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
$config['imap_host'] = arkbox_env('ROUNDCUBE_IMAP_HOST', 'mail:143');
$config['smtp_host'] = arkbox_env('ROUNDCUBE_SMTP_HOST', 'mail:587');
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
