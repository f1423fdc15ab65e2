<?php
/**
 * arkbox: settings the admin UI cannot change (local.php, in the settings volume, can).
 * No self-registration: accounts are made by the admin.
 */
$conf['disableactions'] = 'register';
$conf['updatecheck'] = 0;
