"""Remote registration (Kamailio's uac_reg): accounts from a uacreg table kept registered."""
