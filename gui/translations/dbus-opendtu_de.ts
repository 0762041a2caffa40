<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="de">
<context>
    <name>PageInverterDbusOpenDtu</name>
    <message>
        <source>Name</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Inverter name</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Serial number</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>AC output</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>%1 W</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Limit</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>May be switched off</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>config.ini</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Set in config.ini, section [inverter.&lt;serial&gt;], key enable_switch_off (default true: switched off when the cap is below its minimum)</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>PageSettingsDbusOpenDtu</name>
    <message>
        <source>%1 W</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Unknown</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>OK</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Warning</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Alarm</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Status</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Controller</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Not running</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Grid power (+ import)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Inverter output</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Cap in force</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Set by: %1</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Sum of inverter limits</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>OpenDTU gateway</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Grid meter</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Settings</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Maximum feed-in</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Legal cap for the inverters and a balcony system together</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Zero point</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Grid import to aim for</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Feed-in above SOC</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Above this state of charge, export to the grid is allowed</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Seasonal SOC maximum</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Moved by the controller over the seasons; set a new start here</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Inverters</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>No inverter reported by the gateway yet</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <source>Inverter</source>
        <translation type="unfinished"></translation>
    </message>
</context>
</TS>
