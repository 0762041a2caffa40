<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="de">
<context>
    <name>PageInverterDbusOpenDtu</name>
    <message>
        <source>Name</source>
        <translation>Name</translation>
    </message>
    <message>
        <source>Inverter name</source>
        <translation>Name des Wechselrichters</translation>
    </message>
    <message>
        <source>Serial number</source>
        <translation>Seriennummer</translation>
    </message>
    <message>
        <source>AC output</source>
        <translation>AC-Leistung</translation>
    </message>
    <message>
        <source>%1 W</source>
        <translation>%1 W</translation>
    </message>
    <message>
        <source>Limit</source>
        <translation>Limit</translation>
    </message>
    <message>
        <source>May be switched off</source>
        <translation>Darf abgeschaltet werden</translation>
    </message>
    <message>
        <source>config.ini</source>
        <translation>config.ini</translation>
    </message>
    <message>
        <source>Set in config.ini, section [inverter.&lt;serial&gt;], key enable_switch_off (default true: switched off when the cap is below its minimum)</source>
        <translation>Einstellbar in config.ini, Abschnitt [inverter.&lt;Seriennummer&gt;], Schlüssel enable_switch_off (Standard true: abgeschaltet, wenn die Obergrenze unter seinem Minimum liegt)</translation>
    </message>
</context>
<context>
    <name>PageSettingsDbusOpenDtu</name>
    <message>
        <source>%1 W</source>
        <translation>%1 W</translation>
    </message>
    <message>
        <source>Unknown</source>
        <translation>Unbekannt</translation>
    </message>
    <message>
        <source>OK</source>
        <translation>OK</translation>
    </message>
    <message>
        <source>Warning</source>
        <translation>Warnung</translation>
    </message>
    <message>
        <source>Alarm</source>
        <translation>Alarm</translation>
    </message>
    <message>
        <source>Status</source>
        <translation>Status</translation>
    </message>
    <message>
        <source>Controller</source>
        <translation>Regler</translation>
    </message>
    <message>
        <source>Not running</source>
        <translation>Läuft nicht</translation>
    </message>
    <message>
        <source>Grid power (+ import)</source>
        <translation>Netzleistung (+ Bezug)</translation>
    </message>
    <message>
        <source>Inverter output</source>
        <translation>Wechselrichter-Leistung</translation>
    </message>
    <message>
        <source>Cap in force</source>
        <translation>Geltende Obergrenze</translation>
    </message>
    <message>
        <source>Battery state unknown: inverters at their minimum</source>
        <translation>Batteriezustand unbekannt: Wechselrichter auf Minimum</translation>
    </message>
    <message>
        <source>Set by: maximum feed-in</source>
        <translation>Durch: maximale Einspeisung</translation>
    </message>
    <message>
        <source>Set by: maximum feed-in minus the balcony system</source>
        <translation>Durch: maximale Einspeisung abzüglich Balkonkraftwerk</translation>
    </message>
    <message>
        <source>Set by: battery discharge limit (voltage × DCL)</source>
        <translation>Durch: Entladegrenze der Batterie (Spannung × DCL)</translation>
    </message>
    <message>
        <source>Sum of inverter limits</source>
        <translation>Summe der Wechselrichter-Limits</translation>
    </message>
    <message>
        <source>OpenDTU gateway</source>
        <translation>OpenDTU-Gateway</translation>
    </message>
    <message>
        <source>Grid meter</source>
        <translation>Netzzähler</translation>
    </message>
    <message>
        <source>Settings</source>
        <translation>Einstellungen</translation>
    </message>
    <message>
        <source>Maximum feed-in</source>
        <translation>Maximale Einspeisung</translation>
    </message>
    <message>
        <source>Legal cap for the inverters and a balcony system together</source>
        <translation>Gesetzliche Grenze für Wechselrichter und Balkonkraftwerk zusammen</translation>
    </message>
    <message>
        <source>Zero point</source>
        <translation>Nullpunkt</translation>
    </message>
    <message>
        <source>Grid import to aim for</source>
        <translation>Angestrebter Netzbezug</translation>
    </message>
    <message>
        <source>Feed-in above SOC</source>
        <translation>Einspeisung ab Ladezustand</translation>
    </message>
    <message>
        <source>Above this state of charge, export to the grid is allowed</source>
        <translation>Oberhalb dieses Ladezustands ist Einspeisung ins Netz erlaubt</translation>
    </message>
    <message>
        <source>Seasonal SOC maximum</source>
        <translation>Saisonales SOC-Maximum</translation>
    </message>
    <message>
        <source>Moved by the controller over the seasons; set a new start here</source>
        <translation>Vom Regler über die Jahreszeiten verschoben; hier neu setzen</translation>
    </message>
    <message>
        <source>Inverters</source>
        <translation>Wechselrichter</translation>
    </message>
    <message>
        <source>No inverter reported by the gateway yet</source>
        <translation>Das Gateway meldet noch keinen Wechselrichter</translation>
    </message>
    <message>
        <source>Inverter</source>
        <translation>Wechselrichter</translation>
    </message>
</context>
</TS>
