#include <gtest/gtest.h>
#include "chat_template/chat_template.h"
TEST(Jinja, Smoke) { chatvec::ChatTemplate t("{{ 1 + 2 }}", "t"); EXPECT_EQ(t.render(chatvec::Json::object()), "3"); }
