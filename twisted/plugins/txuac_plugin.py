from twisted.application.service import ServiceMaker

uac = ServiceMaker("txuac", "txuac.tap", "Kamailio uac module as a Twisted service.", "uac")
